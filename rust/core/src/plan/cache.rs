//! Plan cache: packed and ordered plans are stored next to the dataset (in
//! `.plans/`) so that a restart opens them in milliseconds. Files are
//! written atomically, carry the plan fingerprint and an xxh3 trailer, and
//! are rebuilt when missing, stale or damaged. Concat plans are not cached:
//! they hold no table.

use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use super::{Order, PieceTable, Plan, PlanMode, Table};
use crate::error::Result;
use crate::shard::fsutil::write_atomic;
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

fn encode(plan: &Plan, t: &PieceTable) -> Vec<u8> {
    let words = 6 + t.row_starts.len() + 3 * t.docs.len();
    let mut out = Vec::with_capacity(8 * words + 16);
    out.extend_from_slice(MAGIC);
    for v in [
        VERSION,
        plan.mode.code() as u64,
        plan.seq_len,
        plan.fingerprint,
        t.rows(),
        t.docs.len() as u64,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for a in [&t.row_starts, &t.docs, &t.starts, &t.lens] {
        out.extend_from_slice(bytemuck::cast_slice(a));
    }
    let sum = xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// Decodes a cached table if the file is whole and made for `plan`'s parameters.
fn decode(bytes: &[u8], plan: &Plan) -> Option<PieceTable> {
    let body = bytes.len().checked_sub(8)?;
    let words: Vec<u64> = bytes[..body]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    let stored = u64::from_le_bytes(bytes[body..].try_into().ok()?);
    if &bytes[..8] != MAGIC || xxh3_64(&bytes[..body]) != stored || body % 8 != 0 {
        return None;
    }
    let head = [
        VERSION,
        plan.mode.code() as u64,
        plan.seq_len,
        plan.fingerprint,
    ];
    if words.get(1..5)? != head {
        return None;
    }
    let (rows, pieces) = (*words.get(5)? as usize, *words.get(6)? as usize);
    let at = 7;
    if words.len() != at + rows + 1 + 3 * pieces {
        return None;
    }
    let take = |from: usize, n: usize| words[from..from + n].to_vec();
    let t = PieceTable {
        row_starts: take(at, rows + 1),
        docs: take(at + rows + 1, pieces),
        starts: take(at + rows + 1 + pieces, pieces),
        lens: take(at + rows + 1 + 2 * pieces, pieces),
    };
    let ok = t.row_starts.first() == Some(&0)
        && t.row_starts.last() == Some(&(pieces as u64))
        && t.row_starts.windows(2).all(|w| w[0] <= w[1]);
    ok.then_some(t)
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
    if let Ok(bytes) = std::fs::read(&path) {
        if let Some(t) = decode(&bytes, &shell) {
            let mut p = shell;
            p.table = Table::Pieces(t);
            return Ok((p, true));
        }
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
