//! Gathering samples into batch arrays.

use super::guard::FileCheck;
use crate::error::{try_filled, Result};
use crate::plan::{Boundaries, Plan, Segment};
use crate::shard::{Dataset, TokenBuf, Tokens};

/// Integer type of `input_ids`, `labels` and `position_ids`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutDType {
    /// 32-bit.
    I32,
    /// 64-bit (PyTorch's default for indices).
    I64,
}

impl OutDType {
    /// Parses numpy's name (`"int64"`, `"int32"`) or the short one (`"i64"`,
    /// `"i32"`), in any case.
    pub fn parse(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "int64" | "i64" => Ok(OutDType::I64),
            "int32" | "i32" => Ok(OutDType::I32),
            other => Err(crate::Error::invalid(
                "dtype",
                format!("{other:?} is not a batch dtype; use \"int64\" or \"int32\""),
            )),
        }
    }

    /// numpy's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            OutDType::I64 => "int64",
            OutDType::I32 => "int32",
        }
    }
}

/// A `[rows, seq_len]` integer array in the requested type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntBuf {
    /// 32-bit values.
    I32(Vec<i32>),
    /// 64-bit values.
    I64(Vec<i64>),
}

/// How batches are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Input tokens per row (rows hold `seq_len + 1` tokens before the shift).
    pub seq_len: u64,
    /// Integer type of the token arrays.
    pub dtype: OutDType,
    /// Label written where the next token belongs to another document
    /// (`None`: keep the real next token there).
    pub ignore_index: Option<i64>,
    /// Input id written into padding.
    pub pad_id: i64,
    /// Label written for padding.
    pub pad_label: i64,
    /// Produce `position_ids` (skipping it saves a quarter of the memory traffic).
    pub position_ids: bool,
    /// Produce `doc_ids`.
    pub doc_ids: bool,
    /// What `position_ids` and `cu_seqlens` delimit (`None`: what each row's
    /// plan mode calls for, [`PlanMode::default_boundaries`](crate::plan::PlanMode::default_boundaries)).
    pub boundaries: Option<Boundaries>,
}

/// One batch: `[rows, seq_len]` arrays, row-major, plus varlen boundaries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Rows in this batch (the batch size, or fewer in a short last batch).
    pub rows: usize,
    /// Columns.
    pub seq_len: usize,
    /// Tokens `0 .. seq_len` of each row.
    pub input_ids: IntBuf,
    /// Tokens `1 ..= seq_len` of each row (the next token of each input).
    pub labels: IntBuf,
    /// Position of each input token inside its document piece, from 0, or
    /// inside its row with [`Boundaries::Row`] (`None` when not asked for).
    pub position_ids: Option<IntBuf>,
    /// Document id (in its source dataset) of each input token, -1 for padding
    /// (`None` when not asked for).
    pub doc_ids: Option<Vec<i64>>,
    /// Source index of each row (0 without mixing).
    pub source_ids: Vec<i64>,
    /// Sample id of each row in its source's plan: with `source_ids`, names
    /// the sample (e.g. to count which samples were kept or offer one again).
    pub sample_ids: Vec<i64>,
    /// Cumulative lengths of the pieces (documents and padding) of the
    /// flattened `[rows * seq_len]` input, starting at 0 (flash-attn varlen);
    /// with [`Boundaries::Row`], of the rows.
    pub cu_seqlens: Vec<i32>,
}

trait OutInt: Copy + Default {
    fn of(v: i64) -> Self;
}
impl OutInt for i32 {
    #[inline]
    fn of(v: i64) -> Self {
        v as i32
    }
}
impl OutInt for i64 {
    #[inline]
    fn of(v: i64) -> Self {
        v
    }
}

#[inline]
fn copy_tokens<T: OutInt>(src: Tokens<'_>, dst: &mut [T]) {
    match src {
        Tokens::U16(s) => dst
            .iter_mut()
            .zip(s)
            .for_each(|(d, &t)| *d = T::of(t as i64)),
        Tokens::U32(s) => dst
            .iter_mut()
            .zip(s)
            .for_each(|(d, &t)| *d = T::of(t as i64)),
    }
}

struct Rows<'a, T> {
    input: &'a mut [T],
    labels: &'a mut [T],
    positions: Option<&'a mut [T]>,
    doc_ids: Option<&'a mut [i64]>,
}

/// Buffers reused from row to row.
#[derive(Default)]
struct Scratch {
    tokens: TokenBuf,
    /// Per piece of the row: its shard and token range there.
    spans: Vec<(usize, u64, u64)>,
}

fn misfit(seg: &Segment) -> crate::error::Error {
    crate::error::Error::invalid(
        "plan",
        format!(
            "a plan piece (document {}, tokens {}..{}) does not fit the dataset or the row; delete the dataset's .plans directory to rebuild it",
            seg.doc,
            seg.start,
            seg.start.saturating_add(seg.len)
        ),
    )
}

/// Fills one row from its segments. Tokens are copied out of the shards by
/// positioned reads into `scratch`, not from the maps: a shard truncated by
/// another program while the batch is read is an error, never a fault.
/// Pieces that follow each other in one shard (a concat window over several
/// documents) are read with one call.
#[allow(clippy::too_many_arguments)]
fn fill_row<T: OutInt>(
    ds: &Dataset,
    segs: &[Segment],
    cfg: &BatchConfig,
    bounds: Boundaries,
    mut out: Rows<'_, T>,
    cu: &mut Vec<i32>,
    row_base: usize,
    scratch: &mut Scratch,
) -> Result<()> {
    let per_doc = bounds == Boundaries::Document;
    let spans = &mut scratch.spans;
    spans.clear();
    let mut filled = 0u64;
    for seg in segs {
        filled += seg.len;
        if filled > cfg.seq_len + 1 {
            return Err(misfit(seg));
        }
        let span = ds.piece_span(seg.doc, seg.start, seg.len)?;
        spans.push(span.ok_or_else(|| misfit(seg))?);
    }
    let mut at = 0usize; // position in the row of seq_len + 1 tokens
    let mut first = 0usize;
    while first < segs.len() {
        let (shard, from, mut to) = spans[first];
        let mut stop = first + 1;
        while stop < segs.len() && spans[stop].0 == shard && spans[stop].1 == to {
            to = spans[stop].2;
            stop += 1;
        }
        let run = ds.shards()[shard].read_tokens(from, to, &mut scratch.tokens)?;
        for k in first..stop {
            let seg = &segs[k];
            let piece = slice_tokens(run, (spans[k].1 - from) as usize, seg.len as usize);
            at = place_piece(cfg, per_doc, seg, k, piece, at, &mut out, cu, row_base);
        }
        first = stop;
    }
    pad_row(cfg, per_doc, at, &mut out, cu, row_base);
    if !per_doc {
        cu.push((row_base + cfg.seq_len as usize) as i32);
    }
    Ok(())
}

/// Copies one piece of a row into its inputs, labels, positions and
/// document ids; returns the row position after it. With `per_doc`,
/// positions restart at the piece and it ends a `cu_seqlens` span; otherwise
/// positions run on over the row.
#[allow(clippy::too_many_arguments)]
fn place_piece<T: OutInt>(
    cfg: &BatchConfig,
    per_doc: bool,
    seg: &Segment,
    k: usize,
    piece: Tokens<'_>,
    at: usize,
    out: &mut Rows<'_, T>,
    cu: &mut Vec<i32>,
    row_base: usize,
) -> usize {
    let l = cfg.seq_len as usize;
    let end = at + seg.len as usize;
    // Inputs: row positions [at, min(end, l)).
    if at < l {
        let n = end.min(l) - at;
        copy_tokens(slice_tokens(piece, 0, n), &mut out.input[at..at + n]);
        if let Some(pos) = out.positions.as_deref_mut() {
            let p0 = if per_doc { 0 } else { at as i64 };
            for (i, p) in pos[at..at + n].iter_mut().enumerate() {
                *p = T::of(p0 + i as i64);
            }
        }
        if let Some(ids) = out.doc_ids.as_deref_mut() {
            ids[at..at + n].fill(seg.doc as i64);
        }
        if per_doc {
            cu.push((row_base + at + n) as i32);
        }
    }
    // Labels: row positions [max(at, 1), end) shift to [.. - 1].
    let from = at.max(1);
    if end > from {
        copy_tokens(
            slice_tokens(piece, from - at, end - from),
            &mut out.labels[from - 1..end - 1],
        );
    }
    // The label at the last input of the previous piece is this piece's
    // first token: another document.
    if let Some(ignore) = cfg.ignore_index {
        if k > 0 && at >= 1 && at - 1 < l {
            out.labels[at - 1] = T::of(ignore);
        }
    }
    end
}

/// Padding after the last piece of a row, which ends at row position `at`.
fn pad_row<T: OutInt>(
    cfg: &BatchConfig,
    per_doc: bool,
    at: usize,
    out: &mut Rows<'_, T>,
    cu: &mut Vec<i32>,
    row_base: usize,
) {
    let l = cfg.seq_len as usize;
    if at <= l {
        let pad_from = at;
        if pad_from < l {
            out.input[pad_from..].fill(T::of(cfg.pad_id));
            if let Some(pos) = out.positions.as_deref_mut() {
                let p0 = if per_doc { 0 } else { pad_from as i64 };
                pos[pad_from..]
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, p)| *p = T::of(p0 + i as i64));
            }
            if let Some(ids) = out.doc_ids.as_deref_mut() {
                ids[pad_from..].fill(-1);
            }
            if per_doc {
                cu.push((row_base + l) as i32);
            }
        }
        let label_from = at.saturating_sub(1);
        out.labels[label_from..].fill(T::of(cfg.pad_label));
    }
}

fn slice_tokens(t: Tokens<'_>, start: usize, len: usize) -> Tokens<'_> {
    match t {
        Tokens::U16(s) => Tokens::U16(&s[start..start + len]),
        Tokens::U32(s) => Tokens::U32(&s[start..start + len]),
    }
}

/// input_ids, labels, position_ids, doc_ids, cu_seqlens.
type Arrays<T> = (Vec<T>, Vec<T>, Option<Vec<T>>, Option<Vec<i64>>, Vec<i32>);

fn assemble_typed<T: OutInt>(
    samples: &[(usize, u64)],
    sources: &[(&Dataset, &Plan)],
    cfg: &BatchConfig,
) -> Result<Arrays<T>> {
    let l = cfg.seq_len as usize;
    let n = crate::error::checked_size(samples.len(), l, "batch_size x seq_len")?;
    let what = "batch_size x seq_len";
    let (mut input, mut labels) = (
        try_filled(n, T::default(), what)?,
        try_filled(n, T::default(), what)?,
    );
    let mut positions = if cfg.position_ids {
        Some(try_filled(n, T::default(), what)?)
    } else {
        None
    };
    let mut doc_ids = if cfg.doc_ids {
        Some(try_filled(n, 0i64, what)?)
    } else {
        None
    };
    let mut scratch = Scratch::default();
    let mut cu = vec![0i32];
    let mut segs = Vec::new();
    let mut check = FileCheck::new(sources.len());
    for (r, &(s, id)) in samples.iter().enumerate() {
        let (ds, plan) = sources[s];
        check.sample(s, ds, plan, id)?;
        plan.sample(ds, id, &mut segs)?;
        check.segments(s, ds, &segs)?;
        let span = r * l..(r + 1) * l;
        let bounds = cfg
            .boundaries
            .unwrap_or_else(|| plan.mode().default_boundaries());
        fill_row(
            ds,
            &segs,
            cfg,
            bounds,
            Rows {
                input: &mut input[span.clone()],
                labels: &mut labels[span.clone()],
                positions: positions.as_mut().map(|p| &mut p[span.clone()]),
                doc_ids: doc_ids.as_mut().map(|d| &mut d[span]),
            },
            &mut cu,
            r * l,
            &mut scratch,
        )?;
    }
    Ok((input, labels, positions, doc_ids, cu))
}

/// Builds the batch of `samples` (source index, sample id) from `sources`.
pub fn assemble(
    samples: &[(usize, u64)],
    sources: &[(&Dataset, &Plan)],
    cfg: &BatchConfig,
) -> Result<Batch> {
    if let Some(&(s, _)) = samples.iter().find(|&&(s, _)| s >= sources.len()) {
        return Err(crate::error::Error::invalid(
            "sample",
            format!(
                "source {s} does not exist (there are {} sources)",
                sources.len()
            ),
        ));
    }
    // Remote sources: their shards are fetched and mapped for this batch.
    let held = super::resident::acquire(samples, sources)?;
    let views = super::resident::views(sources, &held);
    let sources = &views[..];
    let source_ids = samples.iter().map(|&(s, _)| s as i64).collect();
    let sample_ids = samples.iter().map(|&(_, id)| id as i64).collect();
    let (input_ids, labels, position_ids, doc_ids, cu_seqlens) = match cfg.dtype {
        OutDType::I32 => {
            let (a, b, c, d, e) = assemble_typed::<i32>(samples, sources, cfg)?;
            (IntBuf::I32(a), IntBuf::I32(b), c.map(IntBuf::I32), d, e)
        }
        OutDType::I64 => {
            let (a, b, c, d, e) = assemble_typed::<i64>(samples, sources, cfg)?;
            (IntBuf::I64(a), IntBuf::I64(b), c.map(IntBuf::I64), d, e)
        }
    };
    Ok(Batch {
        rows: samples.len(),
        seq_len: cfg.seq_len as usize,
        input_ids,
        labels,
        position_ids,
        doc_ids,
        source_ids,
        sample_ids,
        cu_seqlens,
    })
}
