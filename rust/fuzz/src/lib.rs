//! One fuzz target over every parser of a file tokenloom reads: the manifest, the `.idx`,
//! order files, Megatron `.bin`/`.idx` pairs and datatrove `.ds`/`.ds.index` pairs (with
//! their metadata). [`check`] must never panic, abort or hang on any input: a bad file is an
//! `Err`, and whatever a parser accepts must hold together (round trips, ranges, totals).
//!
//! Input layout: byte 0 picks the [`Kind`] (low 3 bits) and whether to *reseal* (bit 7:
//! recompute the file's own checksum after mutation, as a crafted file would have, so that
//! the checks past the checksum are reached too). Kinds made of two files read a `u32`
//! (little-endian) length of the first file, then the two files' bytes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tokenloom_core::batch::{assemble, BatchConfig, OutDType};
use tokenloom_core::order_file::Order;
use tokenloom_core::plan::{Plan, PlanMode};
use tokenloom_core::shard::compat::datatrove;
use tokenloom_core::shard::{IndexView, Manifest};
use tokenloom_core::{Dataset, NoProgress, VerifyOptions};
use xxhash_rust::xxh3::xxh3_64;

pub mod seeds;

/// What the input holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `manifest.json`.
    Manifest = 0,
    /// A tokenloom `.idx`, parsed from bytes.
    Index = 1,
    /// An order file.
    Order = 2,
    /// A `.bin` and its `.idx` (tokenloom's or Megatron's), opened as a dataset.
    Pair = 3,
    /// A datatrove `.ds.index` and `.ds`, opened as a dataset.
    Datatrove = 4,
    /// A datatrove `.ds.metadata` text.
    Metadata = 5,
}

const KINDS: [Kind; 6] = [
    Kind::Manifest,
    Kind::Index,
    Kind::Order,
    Kind::Pair,
    Kind::Datatrove,
    Kind::Metadata,
];
const RESEAL: u8 = 0x80;

/// An input of `kind` holding `files` (one, or two for pairs).
pub fn input(kind: Kind, reseal: bool, files: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![kind as u8 | if reseal { RESEAL } else { 0 }];
    if let [first, second] = files {
        out.extend_from_slice(&(first.len() as u32).to_le_bytes());
        out.extend_from_slice(first);
        out.extend_from_slice(second);
    } else if let [only] = files {
        out.extend_from_slice(only);
    }
    out
}

fn split(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 4 {
        return (data, &[]);
    }
    let n = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let rest = &data[4..];
    rest.split_at(n.min(rest.len()))
}

/// Rewrites the trailing xxh3 of an `.idx` or order file over the bytes before it.
fn resealed(file: &[u8]) -> Vec<u8> {
    let mut out = file.to_vec();
    if out.len() >= 8 {
        let body = out.len() - 8;
        let sum = xxh3_64(&out[..body]);
        out[body..].copy_from_slice(&sum.to_le_bytes());
    }
    out
}

/// Runs every parser the input's kind reaches; panics when an invariant breaks.
pub fn check(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let kind = KINDS[(head & 0x07) as usize % KINDS.len()];
    let reseal = head & RESEAL != 0;
    match kind {
        Kind::Manifest => manifest(rest),
        Kind::Index => index(&if reseal {
            resealed(rest)
        } else {
            rest.to_vec()
        }),
        Kind::Order => order(&if reseal {
            resealed(rest)
        } else {
            rest.to_vec()
        }),
        Kind::Pair => {
            let (idx, bin) = split(rest);
            let idx = if reseal { resealed(idx) } else { idx.to_vec() };
            dataset(&[("x.idx", &idx), ("x.bin", bin)], "x.bin");
        }
        Kind::Datatrove => {
            let (index, ds) = split(rest);
            dataset(&[("y.ds.index", index), ("y.ds", ds)], "y.ds");
        }
        Kind::Metadata => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = datatrove::parse_metadata(text, Path::new("y.ds.metadata"));
            }
        }
    }
}

fn manifest(bytes: &[u8]) {
    let path = Path::new("manifest.json");
    if let Ok(m) = Manifest::from_bytes(bytes, path) {
        let again = m.to_bytes().map(|b| Manifest::from_bytes(&b, path));
        assert!(
            matches!(again, Ok(Ok(ref m2)) if *m2 == m),
            "an accepted manifest does not round-trip: {again:?}"
        );
    }
}

fn index(bytes: &[u8]) {
    let path = Path::new("x.idx");
    let Ok(view) = IndexView::parse(bytes, path) else {
        return;
    };
    let h = view.header;
    let ranges: Vec<_> = (0..h.num_docs as usize)
        .map(|j| view.doc_range(j, path))
        .collect();
    for (s, e) in ranges.iter().flatten() {
        assert!(s <= e && *e <= h.num_tokens, "range {s}..{e} of {h:?}");
    }
    let mut lengths = Vec::new();
    let listed = view.doc_lengths_into(&mut lengths, path);
    if view.check_all(path).is_ok() {
        assert!(
            ranges.iter().all(Result::is_ok),
            "a checked index has a bad range"
        );
        assert!(
            listed.is_ok(),
            "a checked index fails doc_lengths: {listed:?}"
        );
        assert_eq!(
            lengths.iter().sum::<u64>(),
            h.num_tokens,
            "lengths of {h:?}"
        );
    }
}

fn order(bytes: &[u8]) {
    let Ok(o) = Order::from_bytes(bytes, Path::new("x.order")) else {
        return;
    };
    let written = o.to_bytes();
    // The writer writes the current version; an older file it accepted (version 1) is
    // rewritten in it, holding the same order.
    if bytes[8..12] == written[8..12] {
        assert_eq!(written, bytes, "an accepted order file does not round-trip");
    } else {
        let again = Order::from_bytes(&written, Path::new("x.order"))
            .expect("an accepted order file, rewritten, is refused");
        assert_eq!(
            (
                again.docs(),
                again.context_starts(),
                again.flow(),
                again.meta()
            ),
            (o.docs(), o.context_starts(), o.flow(), o.meta()),
            "an accepted older order file changes when rewritten"
        );
        assert_eq!(
            again.to_bytes(),
            written,
            "a rewritten order file does not round-trip"
        );
    }
    let listed: usize = (0..o.num_contexts()).map(|k| o.context(k).len()).sum();
    assert_eq!(listed, o.docs().len());
}

/// A directory of this process for the files of an input.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("tokenloom-fuzz-{}", std::process::id()));
        let _ = fs::create_dir_all(&dir);
        dir
    })
}

/// Removes this process's scratch directory (libFuzzer runs leave theirs: a few KiB).
pub fn cleanup() {
    let _ = fs::remove_dir_all(scratch());
}

/// Opens the files as a dataset and reads everything: documents, lengths, plans, batches,
/// verification. What `verify` accepts must read whole.
fn dataset(files: &[(&str, &[u8])], open: &str) {
    let dir = scratch();
    for (name, bytes) in files {
        let path = dir.join(name);
        let _ = fs::remove_file(&path); // a new inode: no map of an earlier input sees it change
        if fs::write(&path, bytes).is_err() {
            return;
        }
    }
    let Ok(ds) = Dataset::open(dir.join(open)) else {
        return;
    };
    let docs: Vec<_> = (0..ds.num_docs())
        .map(|i| ds.doc(i).map(|d| d.len()))
        .collect();
    let lengths = ds.doc_lengths();
    let verified =
        tokenloom_core::shard::verify::verify_dataset(&ds, VerifyOptions::default(), &NoProgress)
            .is_ok();
    if verified {
        let lengths = lengths.unwrap_or_else(|e| panic!("verified, yet doc_lengths fails: {e}"));
        let read: Vec<u64> = docs
            .iter()
            .map(|d| match d {
                Ok(n) => *n as u64,
                Err(e) => panic!("verified, yet a document fails: {e}"),
            })
            .collect();
        assert_eq!(read, lengths, "document lengths disagree");
        assert_eq!(lengths.iter().sum::<u64>(), ds.num_tokens());
    }
    for mode in [PlanMode::Concat, PlanMode::Pack] {
        let Ok(plan) = Plan::build(&ds, mode, 8, None) else {
            assert!(
                !verified || mode == PlanMode::Concat,
                "verified, yet no pack plan"
            );
            continue;
        };
        let cfg = BatchConfig {
            seq_len: 8,
            dtype: OutDType::I64,
            ignore_index: Some(-100),
            pad_id: 0,
            pad_label: -100,
            position_ids: true,
            doc_ids: true,
            boundaries: None,
        };
        for i in 0..plan.num_samples().min(256) {
            let got = assemble(&[(0, i)], &[(&ds, &plan)], &cfg);
            assert!(
                !verified || got.is_ok(),
                "verified, yet sample {i} fails: {got:?}"
            );
        }
    }
}
