//! The document vectors ordering works on: the built-in embeddings, or the
//! given ones checked and scaled to unit length; which documents take part
//! in the kNN graph; and the kNN lists of those documents.

use std::borrow::Cow;

use half::f16;
use rayon::prelude::*;

use super::{embed, knn, Input, OrderParams};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::shard::Dataset;

/// Unit-length vectors of the documents of `ds`, row-major `[num_docs, dim]`,
/// with the dimension: built-in embeddings (zero rows for documents without
/// features) or the given ones checked and normalised. `None` for a kNN
/// matrix, which comes without vectors.
pub fn document_vectors<'a>(
    ds: &Dataset,
    params: &OrderParams,
    input: Input<'a>,
    progress: &dyn Progress,
) -> Result<Option<(Cow<'a, [f32]>, usize)>> {
    Ok(match input {
        Input::Builtin => Some((
            Cow::Owned(embed::embed_dataset(ds, &params.embed, progress)?),
            params.embed.dim,
        )),
        Input::Embeddings { data, dim } => {
            Some((normalized(data, dim, ds.num_docs() as usize)?, dim))
        }
        Input::Knn(_) => None,
    })
}

/// Embedding values as given: float32, or float16 (converted row by row,
/// never copied as float16).
#[derive(Clone, Copy, Debug)]
pub enum Values<'a> {
    /// Single precision.
    F32(&'a [f32]),
    /// Half precision.
    F16(&'a [f16]),
}

impl<'a> From<&'a [f32]> for Values<'a> {
    fn from(v: &'a [f32]) -> Self {
        Values::F32(v)
    }
}

impl<'a> From<&'a Vec<f32>> for Values<'a> {
    fn from(v: &'a Vec<f32>) -> Self {
        Values::F32(v)
    }
}

impl Values<'_> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F16(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i` of `dim` values, as float32, into `out`.
    fn row_into(&self, i: usize, dim: usize, out: &mut [f32]) {
        match self {
            Values::F32(v) => out.copy_from_slice(&v[i * dim..(i + 1) * dim]),
            Values::F16(v) => {
                for (o, x) in out.iter_mut().zip(&v[i * dim..(i + 1) * dim]) {
                    *o = x.to_f32();
                }
            }
        }
    }
}

/// How far a row's length may be from 1 for it to be used as it is.
const UNIT_TOLERANCE: f64 = 1e-4;

/// Which documents take part in the graph (non-empty, with a non-zero
/// vector), and the non-empty ones without features (a zero vector), which
/// go after the path.
pub fn participants(lengths: &[u64], vectors: Option<(&[f32], usize)>) -> (Vec<bool>, Vec<u32>) {
    let has_vector = |i: usize| match vectors {
        Some((v, d)) => v[i * d..(i + 1) * d].iter().any(|&x| x != 0.0),
        None => true,
    };
    let n = lengths.len();
    let featureless: Vec<u32> = (0..n)
        .filter(|&i| lengths[i] > 0 && !has_vector(i))
        .map(|i| i as u32)
        .collect();
    let active = (0..n).map(|i| lengths[i] > 0 && has_vector(i)).collect();
    (active, featureless)
}

/// Checks `[n, dim]` embeddings (finite, no zero rows) and returns them at
/// unit length: float32 rows that already are (within 1e-4) are borrowed,
/// not copied (the check reads them in place); other inputs are converted
/// and scaled into one float32 copy, in parallel.
pub(super) fn normalized<'a>(data: Values<'a>, dim: usize, n: usize) -> Result<Cow<'a, [f32]>> {
    let bad = |what: String| Error::invalid("embeddings", what);
    if dim == 0 || data.len() != n * dim {
        return Err(bad(format!(
            "expected [{n}, d] (one row per document of the dataset), got {} values with d = {dim}",
            data.len()
        )));
    }
    // Lengths first, in place, every row read: the first bad row (by index)
    // is the one named, and a row not of unit length anywhere means a copy.
    let (fault, unit) = (0..n)
        .into_par_iter()
        .with_min_len(1024)
        .map(|i| {
            let mut row = vec![0f32; dim];
            data.row_into(i, dim, &mut row);
            if let Some(j) = row.iter().position(|x| !x.is_finite()) {
                return (
                    Some((i, format!("row {i} has {} at column {j}", row[j]))),
                    false,
                );
            }
            let norm = row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            if norm == 0.0 {
                let what =
                    format!("row {i} is all zeros; every document needs a non-zero embedding");
                return (Some((i, what)), false);
            }
            (None, (norm - 1.0).abs() <= UNIT_TOLERANCE)
        })
        .reduce(
            || (None, true),
            |(fa, ua), (fb, ub)| {
                let first = match (fa, fb) {
                    (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
                    (a, b) => a.or(b),
                };
                (first, ua && ub)
            },
        );
    match (fault, data) {
        (Some((_, what)), _) => return Err(bad(what)),
        (None, Values::F32(v)) if unit => return Ok(Cow::Borrowed(v)),
        _ => {}
    }
    let mut out = vec![0f32; n * dim];
    out.par_chunks_mut(dim).enumerate().for_each(|(i, row)| {
        data.row_into(i, dim, row);
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    });
    Ok(Cow::Owned(out))
}

/// kNN over the active rows of `v`, as `[n, k]` ids into `v` (-1 for
/// inactive rows) and similarities, with whether the search was exact
/// (`params.exact`, by default below [`knn::EXACT_BELOW`] active rows).
pub(super) fn neighbours(
    v: &[f32],
    d: usize,
    active: &[bool],
    params: &OrderParams,
    progress: &dyn Progress,
) -> Result<(Vec<i64>, Vec<f32>, bool)> {
    let k = params.k;
    let rows: Vec<usize> = (0..active.len()).filter(|&i| active[i]).collect();
    if k == 0 || k >= rows.len() {
        return Err(Error::invalid(
            "k",
            format!(
                "{k} neighbours need more than {k} documents with content; this dataset has {}",
                rows.len()
            ),
        ));
    }
    let exact = params.exact.unwrap_or(rows.len() < knn::EXACT_BELOW);
    let compact;
    let data: &[f32] = if rows.len() == active.len() {
        v
    } else {
        compact = rows
            .iter()
            .flat_map(|&i| v[i * d..(i + 1) * d].iter().copied())
            .collect::<Vec<f32>>();
        &compact
    };
    let g = if exact {
        knn::exact(data, rows.len(), d, k, progress)?
    } else {
        let ivf = knn::IvfParams {
            seed: params.seed,
            exact_below: 0,
            ..knn::IvfParams::default()
        };
        knn::approximate(data, rows.len(), d, k, &ivf, progress)?
    };
    let n = active.len();
    let mut ids = vec![-1i64; n * k];
    let mut sims = vec![0f32; n * k];
    for (r, &i) in rows.iter().enumerate() {
        for (c, (&j, &s)) in g.neighbors(r).iter().zip(g.sims(r)).enumerate() {
            ids[i * k + c] = rows[j as usize] as i64;
            sims[i * k + c] = s;
        }
    }
    Ok((ids, sims, exact))
}
