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
    let e = w.add(&[-1i64]).unwrap_err().to_string();
    assert!(e.contains("negative"), "{e}");
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
