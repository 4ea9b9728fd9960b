use super::*;
use crate::shard::reader::Dataset;

fn opts() -> WriterOptions {
    WriterOptions {
        vocab_size: Some(1000),
        eos_id: Some(0),
        ..Default::default()
    }
}

#[test]
fn round_trip_with_rollover() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let mut w = DatasetWriter::create(
        &root,
        WriterOptions {
            shard_bytes: 10,
            ..opts()
        },
    )
    .unwrap();
    let docs: Vec<Vec<u32>> = vec![vec![1, 2, 3], vec![], vec![4; 9], vec![5, 6]];
    for d in &docs {
        w.add(d).unwrap();
    }
    let m = w.close().unwrap();
    assert_eq!(m.num_docs, 4);
    assert_eq!(m.shards.len(), 3);
    let ds = Dataset::open(&root).unwrap();
    for (i, d) in docs.iter().enumerate() {
        assert_eq!(&ds.doc(i as u64).unwrap().to_vec(), d);
    }
    assert_eq!(ds.doc_lengths().unwrap(), vec![3, 0, 9, 2]);
}

#[test]
fn rejects_out_of_vocab_and_negative_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = DatasetWriter::create(dir.path().join("ds"), opts()).unwrap();
    w.add(&[1i64, 2]).unwrap();
    let e = w.add(&[3i64, 1000]).unwrap_err().to_string();
    assert!(e.contains("document 1") && e.contains("position 1"), "{e}");
    let e = w.add(&[5i64, -7]).unwrap_err().to_string();
    assert!(e.contains("token -7 at position 1"), "{e}");
}

#[test]
fn a_second_writer_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let mut first = DatasetWriter::create(&root, opts()).unwrap();
    first.add(&[1u16, 2]).unwrap();
    let second = DatasetWriter::create(
        &root,
        WriterOptions {
            overwrite: true,
            ..opts()
        },
    );
    let e = second.err().unwrap();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("process {}", std::process::id())),
        "{msg}"
    );
    assert!(msg.contains("DatasetWriter"), "{msg}");
    first.close().unwrap();
    // Once the first has committed, a writer without overwrite sees its dataset.
    assert!(matches!(
        DatasetWriter::create(&root, opts()),
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(Dataset::open(&root).unwrap().num_docs(), 1);
    assert!(!root.join(super::super::lock::DIR_LOCK).exists());
}

#[test]
fn the_last_generation_is_refused_not_wrapped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let mut w = DatasetWriter::create(&root, opts()).unwrap();
    w.add(&[1u16]).unwrap();
    w.close().unwrap();
    std::fs::write(root.join(format!("part-00000.g{}.bin", u64::MAX)), b"").unwrap();
    let e = DatasetWriter::create(
        &root,
        WriterOptions {
            overwrite: true,
            ..opts()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("generation 18446744073709551615 is the largest"),
        "{e}"
    );
    assert_eq!(
        Dataset::open(&root).unwrap().num_docs(),
        1,
        "old dataset kept"
    );
}

#[cfg(unix)]
#[test]
fn planted_symlinks_at_temporary_names_are_not_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let outside = dir.path().join("outside");
    std::fs::write(&outside, b"precious").unwrap();
    std::fs::create_dir(&root).unwrap();
    for name in [
        ".tmp.manifest.json",
        ".tmp.part-00000.g1.bin",
        ".tmp.part-00000.g1.idx",
    ] {
        std::os::unix::fs::symlink(&outside, root.join(name)).unwrap();
    }
    let mut w = DatasetWriter::create(&root, opts()).unwrap();
    w.add(&[1u16, 2, 3]).unwrap();
    w.close().unwrap();
    assert_eq!(std::fs::read(&outside).unwrap(), b"precious");
    assert_eq!(
        Dataset::open(&root).unwrap().doc(0).unwrap().to_vec(),
        vec![1, 2, 3]
    );
}

#[test]
fn existing_dataset_needs_overwrite_and_abort_keeps_old() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    let mut w = DatasetWriter::create(&root, opts()).unwrap();
    w.add(&[1u16, 2]).unwrap();
    w.close().unwrap();
    assert!(matches!(
        DatasetWriter::create(&root, opts()),
        Err(Error::AlreadyExists { .. })
    ));
    let mut w = DatasetWriter::create(
        &root,
        WriterOptions {
            overwrite: true,
            ..opts()
        },
    )
    .unwrap();
    w.add(&[7u16; 100]).unwrap();
    drop(w); // aborted: the old dataset is still there, alone
    let ds = Dataset::open(&root).unwrap();
    assert_eq!(ds.doc(0).unwrap().to_vec(), vec![1, 2]);
    assert_eq!(fs::read_dir(&root).unwrap().count(), 3);
    let mut w = DatasetWriter::create(
        &root,
        WriterOptions {
            overwrite: true,
            ..opts()
        },
    )
    .unwrap();
    w.add(&[9u16]).unwrap();
    w.close().unwrap();
    let ds = Dataset::open(&root).unwrap();
    assert_eq!(ds.doc(0).unwrap().to_vec(), vec![9]);
    assert_eq!(ds.manifest().generation, 2);
    assert_eq!(
        fs::read_dir(&root).unwrap().count(),
        3,
        "old generation removed"
    );
}

#[test]
fn the_fingerprint_covers_document_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, docs: &[&[u16]]| {
        let root = dir.path().join(name);
        let mut w = DatasetWriter::create(&root, opts()).unwrap();
        for d in docs {
            w.add(d).unwrap();
        }
        w.close().unwrap();
        Dataset::open(&root).unwrap().fingerprint()
    };
    // The same tokens, counts and dtype; only where documents end differs.
    let a = write("a", &[&[1, 2, 3], &[4, 5, 6]]);
    let b = write("b", &[&[1, 2], &[3, 4, 5, 6]]);
    let a2 = write("a2", &[&[1, 2, 3], &[4, 5, 6]]);
    assert_ne!(a, b);
    assert_eq!(a, a2);
}
