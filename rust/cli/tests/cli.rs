//! End-to-end tests of `index`, `inspect` and `verify`, run in-process
//! through `run_with` on tiny files in a temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{docs, make_dataset, s, shard_bins, tokenloom, write_u16};
use serde_json::Value;

#[test]
fn index_headerless_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("train.bin");
    write_u16(&bin, false, &[5, 6, 0, 7, 0, 8]);
    let r = tokenloom(&["index", s(&bin), "--dtype", "u16", "--eos", "0"]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.err.is_empty(), "{}", r.err);
    for part in [
        "3 documents",
        "6 tokens",
        "dtype u16",
        "header none",
        "boundary after",
        "GB/s",
    ] {
        assert!(r.out.contains(part), "{part:?} missing in {}", r.out);
    }
    let idx = dir.path().join("train.idx");
    assert!(r.out.contains(s(&idx)));
    assert!(idx.is_file());
    assert_eq!(r.out.lines().count(), 1);
    assert_eq!(docs(&bin), vec![vec![5, 6, 0], vec![7, 0], vec![8]]);

    let r = tokenloom(&["verify", s(&bin)]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.out, "ok: 1 shards, 3 documents, 6 tokens verified\n");

    // An existing index is kept unless --overwrite.
    let again = ["index", s(&bin), "--dtype", "u16", "--eos", "0"];
    let r = tokenloom(&again);
    assert_eq!(r.code, 2);
    assert!(r.err.starts_with("error: ") && r.err.contains("already exists"));
    assert!(r.out.is_empty());
    let r = tokenloom(&[&again[..], &["--boundary", "before", "--overwrite"][..]].concat());
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.contains("boundary before"));
    assert_eq!(docs(&bin), vec![vec![5, 6], vec![0, 7], vec![0, 8]]);
}

#[test]
fn index_llmc_header() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("fineweb_val_000000.bin");
    write_u16(&bin, true, &[0, 5, 6, 0, 7]);

    // The header implies the dtype; asking for another one is refused.
    let r = tokenloom(&["index", s(&bin), "--eos", "0", "--dtype", "u32"]);
    assert_eq!(r.code, 2);
    assert!(r.err.contains("llm.c header"), "{}", r.err);

    let r = tokenloom(&["-q", "index", s(&bin), "--eos", "0"]);
    assert_eq!(r.code, 0, "{}", r.err);
    for part in [
        "2 documents",
        "5 tokens",
        "dtype u16",
        "header llm.c",
        "boundary before",
    ] {
        assert!(r.out.contains(part), "{part:?} missing in {}", r.out);
    }
    assert_eq!(docs(&bin), vec![vec![0, 5, 6], vec![0, 7]]);

    // Forced headerless, the 1024 header bytes are 512 tokens; -o picks the path.
    let custom = dir.path().join("custom.idx");
    let r = tokenloom(&[
        "index",
        s(&bin),
        "--eos",
        "0",
        "--dtype",
        "u16",
        "--header",
        "none",
        "-o",
        s(&custom),
    ]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert!(r.out.contains("517 tokens") && r.out.contains("header none"));
    assert!(custom.is_file());

    // --header llmc on a headerless file is a data error naming the file.
    let plain = dir.path().join("plain.bin");
    write_u16(&plain, false, &[1, 2, 3]);
    let r = tokenloom(&["index", s(&plain), "--eos", "0", "--header", "llmc"]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("plain.bin") && r.err.contains("byte 0"));
}

#[test]
fn inspect_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    make_dataset(&root);

    let r = tokenloom(&["inspect", s(&root)]);
    assert_eq!(r.code, 0, "{}", r.err);
    for line in [
        format!("dataset     {}", root.display()),
        "documents   3".into(),
        "tokens      9".into(),
        "shards      3".into(),
        "eos_id      0".into(),
        "vocab_size  100".into(),
        "tokenizer   test-tok".into(),
        "doc length  mean 3.0  min 3".into(),
    ] {
        assert!(r.out.contains(&line), "{line:?} missing in {}", r.out);
    }

    let r = tokenloom(&["inspect", "--json", s(&root)]);
    assert_eq!(r.code, 0, "{}", r.err);
    let v: Value = serde_json::from_str(&r.out).unwrap();
    assert_eq!(v["path"], s(&root));
    assert_eq!(v["dtype"], "u16");
    assert_eq!(v["num_docs"], 3);
    assert_eq!(v["num_tokens"], 9);
    assert_eq!(v["num_shards"], 3);
    assert_eq!(v["token_bytes"], 18);
    assert_eq!(v["eos_id"], 0);
    assert_eq!(v["vocab_size"], 100);
    assert_eq!(v["tokenizer"], "test-tok");
    assert_eq!(v["doc_len"]["mean"], 3.0);
    assert_eq!(v["doc_len"]["max"], 3);
    assert_eq!(v["doc_len"]["p50"], 3);
}

#[test]
fn verify_ok_then_corrupt_byte() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    make_dataset(&root);
    let r = tokenloom(&["verify", s(&root)]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.out, "ok: 3 shards, 3 documents, 9 tokens verified\n");

    let bin = &shard_bins(&root)[1];
    let mut bytes = std::fs::read(bin).unwrap();
    bytes[2] ^= 0x01; // token 4 becomes 5: same size, same vocabulary
    std::fs::write(bin, bytes).unwrap();

    let r = tokenloom(&["verify", s(&root)]);
    assert_eq!(r.code, 1);
    assert!(r.out.is_empty(), "{}", r.out);
    let name = bin.file_name().unwrap().to_str().unwrap();
    assert!(r.err.starts_with("error: "), "{}", r.err);
    assert!(r.err.contains(name), "{} lacks {name}", r.err);
    assert!(
        r.err.contains("byte") && r.err.contains("checksum"),
        "{}",
        r.err
    );
    assert!(r.err.contains("restore"), "{}", r.err);
}

#[test]
fn verify_checks_provenance_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    make_dataset(&root);
    let runs = [("corpus.jsonl".to_string(), 0)];
    tokenloom_core::shard::source::write_for_dataset(&root, &runs, &[0, 1, 2]).unwrap();
    let r = tokenloom(&["verify", s(&root)]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(
        r.out,
        "ok: 3 shards, 3 documents, 9 tokens verified, provenance of 3 shards\n"
    );

    let src = shard_bins(&root)[2].with_extension("src");
    let mut bytes = std::fs::read(&src).unwrap();
    let n = bytes.len();
    bytes[n - 9] ^= 0x01; // the last row: 2 becomes 3
    std::fs::write(&src, bytes).unwrap();
    let r = tokenloom(&["verify", s(&root)]);
    assert_eq!(r.code, 1);
    assert!(r.out.is_empty(), "{}", r.out);
    let name = src.file_name().unwrap().to_str().unwrap();
    for part in [
        name,
        "checksum mismatch",
        &format!("byte {}", n - 8),
        "rebuild",
    ] {
        assert!(r.err.contains(part), "{part:?} missing in {}", r.err);
    }

    // Without any sidecar the dataset verifies, and the line says nothing of provenance.
    for bin in shard_bins(&root) {
        std::fs::remove_file(bin.with_extension("src")).unwrap();
    }
    let r = tokenloom(&["verify", s(&root)]);
    assert_eq!(r.out, "ok: 3 shards, 3 documents, 9 tokens verified\n");
}

#[test]
fn verify_check_vocab_finds_out_of_vocab_token() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ds");
    make_dataset(&root);
    let bin = &shard_bins(&root)[1];
    let mut bytes = std::fs::read(bin).unwrap();
    bytes[2] = 200; // second token of document 1 becomes 200 >= vocab_size 100
    std::fs::write(bin, bytes).unwrap();

    let r = tokenloom(&["verify", "--check-vocab", s(&root)]);
    assert_eq!(r.code, 1);
    let name = bin.file_name().unwrap().to_str().unwrap();
    for part in [name, "token 200", "document 1", "vocab_size 100", "byte 2"] {
        assert!(r.err.contains(part), "{part:?} missing in {}", r.err);
    }
    // Without the flag the same damage is caught by the checksum instead.
    let r = tokenloom(&["verify", s(&root)]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("checksum") && !r.err.contains("token 200"));

    // A raw indexed file records no vocabulary: --check-vocab is an invalid argument.
    let raw = dir.path().join("raw.bin");
    write_u16(&raw, false, &[1, 0]);
    assert_eq!(
        tokenloom(&["index", s(&raw), "--dtype", "u16", "--eos", "0"]).code,
        0
    );
    let r = tokenloom(&["verify", s(&raw), "--check-vocab"]);
    assert_eq!(r.code, 2);
    assert!(r.err.contains("vocab_size"), "{}", r.err);
}
