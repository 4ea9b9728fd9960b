//! Plan cache: packed and ordered plans are stored next to the dataset (in
//! `.plans/`) so that a restart opens them in milliseconds. Files are
//! written atomically, carry the plan fingerprint and an xxh3 trailer, and
//! are rebuilt when missing, stale or damaged. Concat plans are not cached:
//! they hold no table.

use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use std::sync::Arc;

use super::{Order, PieceTable, Plan, PlanMode, Table};
use crate::error::Result;
use crate::io::{write_atomic, MappedFile};
use crate::shard::Dataset;

const MAGIC: &[u8; 8] = b"TLOOMPLN";
const VERSION: u64 = 1;

/// Where the plan for these parameters is cached: `<dir>/<mode>-L<seq_len>-<fingerprint>.plan`.
pub fn plan_path(dir: &Path, plan: &Plan) -> PathBuf {
    dir.join(format!(
        "{}-L{}-{:016x}.plan",
        plan.mode.name(),
        plan.seq_len,
        plan.fingerprint
    ))
}

const HEADER_WORDS: usize = 7; // magic, version, mode, seq_len, fingerprint, rows, pieces

fn encode(plan: &Plan, t: &PieceTable) -> Vec<u8> {
    let words = t.words();
    let mut out = Vec::with_capacity(8 * (HEADER_WORDS + words.len() + 1));
    out.extend_from_slice(MAGIC);
    for v in [
        VERSION,
        plan.mode.code() as u64,
        plan.seq_len,
        plan.fingerprint,
        t.rows(),
        t.num_pieces() as u64,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(bytemuck::cast_slice(&words));
    let sum = xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

fn word(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(8 * i..8 * i + 8)?.try_into().ok()?,
    ))
}

/// Maps a cached table if the file is whole and made for `plan`'s
/// parameters: checksum, header and row starts are checked; pieces are
/// checked against the dataset as samples are read.
fn open_mapped(path: &Path, plan: &Plan) -> Option<PieceTable> {
    let map = MappedFile::open(path).ok()?;
    let bytes = map.bytes();
    let body = bytes.len().checked_sub(8)?;
    if body % 8 != 0
        || bytes.get(..8)? != MAGIC
        || xxh3_64(&bytes[..body]) != word(bytes, body / 8)?
    {
        return None;
    }
    let head = [
        VERSION,
        plan.mode.code() as u64,
        plan.seq_len,
        plan.fingerprint,
    ];
    if (1..5).map(|i| word(bytes, i)).collect::<Option<Vec<_>>>()? != head {
        return None;
    }
    let (rows, pieces) = (word(bytes, 5)? as usize, word(bytes, 6)? as usize);
    let need = rows
        .checked_add(1)?
        .checked_add(pieces.checked_mul(3)?)?
        .checked_add(HEADER_WORDS)?;
    if need != body / 8 {
        return None;
    }
    let mut prev = 0u64;
    for r in 0..=rows {
        let s = word(bytes, HEADER_WORDS + r)?;
        if (r == 0 && s != 0) || s < prev || s > pieces as u64 {
            return None;
        }
        prev = s;
    }
    if prev != pieces as u64 {
        return None;
    }
    map.advise_random();
    Some(PieceTable::mapped(
        Arc::new(map),
        HEADER_WORDS,
        rows,
        pieces,
    ))
}

/// The plan for `(mode, seq_len, order)` over `ds`, read from `cache_dir`
/// when a valid cached copy is there, else built and (best effort) stored.
/// Returns the plan and whether it came from the cache.
pub fn load_or_build(
    ds: &Dataset,
    mode: PlanMode,
    seq_len: u64,
    order: Option<&Order>,
    cache_dir: Option<&Path>,
) -> Result<(Plan, bool)> {
    // A table-less shell carries the parameters and fingerprint.
    let shell = match mode {
        PlanMode::Concat => return Ok((Plan::concat(ds, seq_len)?, false)),
        _ => {
            let mut p = Plan::concat(ds, seq_len)?;
            p.mode = mode;
            p.fingerprint = Plan::fingerprint_of(ds, mode, seq_len, order);
            p
        }
    };
    if mode == PlanMode::Ordered {
        let Some(o) = order else {
            return Plan::build(ds, mode, seq_len, None).map(|p| (p, false));
        };
        o.check_dataset(ds)?;
    }
    let Some(dir) = cache_dir else {
        return Plan::build(ds, mode, seq_len, order).map(|p| (p, false));
    };
    let path = plan_path(dir, &shell);
    if let Some(t) = open_mapped(&path, &shell) {
        let mut p = shell;
        p.table = Table::Pieces(t);
        return Ok((p, true));
    }
    let plan = Plan::build(ds, mode, seq_len, order)?;
    if let Some(t) = plan.pieces() {
        if std::fs::create_dir_all(dir).is_ok() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = dir.join(format!(".tmp.{name}.{}", std::process::id()));
            if write_atomic(&tmp, &path, &encode(&plan, t)).is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
    }
    Ok((plan, false))
}
