//! Sidecar encoding, splitting across shards, and verification of damage.

use super::*;
use crate::shard::{DatasetWriter, WriterOptions};

#[test]
fn round_trip_and_damage() {
    let s = Sources {
        runs: vec![("a.jsonl".into(), 0), ("dir/b é.parquet".into(), 2)],
        rows: vec![0, 3, 0, 1, 7],
    };
    let p = Path::new("x.src");
    let b = s.encode().unwrap();
    assert_eq!(b.len() % 8, 0);
    assert_eq!(Sources::decode(&b, p).unwrap(), s);
    assert_eq!(s.get(1), Some(("a.jsonl", 3)));
    assert_eq!(s.get(2), Some(("dir/b é.parquet", 0)));
    assert_eq!(s.get(4), Some(("dir/b é.parquet", 7)));
    assert_eq!(s.get(5), None);
    for i in 0..b.len() {
        let mut bad = b.clone();
        bad[i] ^= 0x40;
        assert!(Sources::decode(&bad, p).is_err(), "flip at {i} undetected");
    }
    assert!(Sources::decode(&b[..b.len() - 1], p).is_err());
    let bad = Sources {
        runs: vec![("a".into(), 1)],
        rows: vec![0, 1],
    };
    assert!(bad.encode().is_err());
}

#[test]
fn split_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let mut w = DatasetWriter::create(
        &root,
        WriterOptions {
            shard_bytes: 8,
            ..Default::default()
        },
    )
    .unwrap();
    for _ in 0..5 {
        w.add(&[1u16, 2, 3]).unwrap();
    }
    w.close().unwrap();
    let runs = vec![("a".to_string(), 0), ("b".to_string(), 3)];
    write_for_dataset(&root, &runs, &[10, 11, 12, 0, 1]).unwrap();
    let ds = Dataset::open(&root).unwrap();
    assert_eq!(ds.shards().len(), 5);
    let got: Vec<(String, u64)> = (0..5)
        .map(|i| {
            let (s, j) = ds.locate(i).unwrap();
            let src = load_shard(&ds, s).unwrap();
            let (p, r) = src.get(j).unwrap();
            (p.to_string(), r)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".into(), 10),
            ("a".into(), 11),
            ("a".into(), 12),
            ("b".into(), 0),
            ("b".into(), 1)
        ]
    );
    assert!(write_for_dataset(&root, &runs, &[1, 2]).is_err());
}

fn sourced_dataset(root: &Path) -> Vec<PathBuf> {
    let mut w = DatasetWriter::create(
        root,
        WriterOptions {
            shard_bytes: 8,
            ..Default::default()
        },
    )
    .unwrap();
    for d in [vec![1u16, 2, 3], vec![4, 5, 6], vec![7], vec![8]] {
        w.add(&d).unwrap();
    }
    w.close().unwrap();
    let runs = vec![("a.jsonl".to_string(), 0), ("b.parquet".to_string(), 2)];
    write_for_dataset(root, &runs, &[5, 6, 0, 1]).unwrap();
    let m = Manifest::load(root).unwrap();
    assert_eq!(m.shards.len(), 3);
    m.shards
        .iter()
        .map(|e| root.join(sidecar_name(&e.bin)))
        .collect()
}

fn verify_err(root: &Path) -> (PathBuf, u64, String) {
    let opts = crate::shard::VerifyOptions::default();
    match crate::shard::verify(root, opts, &crate::NoProgress) {
        Err(Error::Corrupt {
            path, offset, what, ..
        }) => (path, offset, what),
        other => panic!("expected a corrupt sidecar, got {other:?}"),
    }
}

#[test]
fn verify_checks_every_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let srcs = sourced_dataset(&root);
    let opts = crate::shard::VerifyOptions::default();
    let report = crate::shard::verify(&root, opts, &crate::NoProgress).unwrap();
    assert_eq!((report.shards, report.sources), (3, 3));
    let good = std::fs::read(&srcs[1]).unwrap();

    // A flipped bit anywhere: the checksum (or the header before it) catches it.
    let mut bad = good.clone();
    bad[HEADER + 3] ^= 0x10;
    std::fs::write(&srcs[1], &bad).unwrap();
    let (path, offset, what) = verify_err(&root);
    assert_eq!(path, srcs[1]);
    assert_eq!(offset, good.len() as u64 - 8);
    assert!(what.contains("checksum"), "{what}");
    let msg = crate::shard::verify(&root, opts, &crate::NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("rebuild the dataset") && msg.contains(".src"),
        "{msg}"
    );

    // Truncated, and not a sidecar at all.
    std::fs::write(&srcs[1], &good[..good.len() - 3]).unwrap();
    assert_eq!(verify_err(&root).0, srcs[1]);
    std::fs::write(&srcs[1], b"TLOOMSR").unwrap();
    assert!(verify_err(&root).2.contains("bad magic"));

    // Whole and valid, but the sidecar of another shard: the document count differs.
    std::fs::copy(&srcs[0], &srcs[1]).unwrap();
    let (path, offset, what) = verify_err(&root);
    assert_eq!((path, offset), (srcs[1].clone(), 16));
    assert!(
        what.contains("1 documents listed, the shard has 2"),
        "{what}"
    );

    // One missing while others exist.
    std::fs::remove_file(&srcs[1]).unwrap();
    let (path, _, what) = verify_err(&root);
    assert_eq!(path, srcs[1]);
    assert!(what.contains("shard 1 is missing"), "{what}");

    // None at all: a dataset without provenance verifies.
    std::fs::remove_file(&srcs[0]).unwrap();
    std::fs::remove_file(&srcs[2]).unwrap();
    let report = crate::shard::verify(&root, opts, &crate::NoProgress).unwrap();
    assert_eq!((report.shards, report.sources), (3, 0));
}
