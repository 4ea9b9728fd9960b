//! End-to-end tests of the CLI's failure paths: usage errors, missing
//! paths and cancellation, with their exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{make_dataset, s, tokenloom, tokenloom_with, write_u16};
use tokenloom_core::CancelToken;

#[test]
fn usage_errors_exit_2_help_and_version_exit_0() {
    for args in [
        &["frobnicate"][..],
        &[],
        &["index", "x.bin"],
        &["index", "x.bin", "--eos", "0", "--dtype", "u8"],
        &["index", "x.bin", "--eos", "-1"],
        &["verify"],
        &["inspect", "a", "--bogus"],
    ] {
        let r = tokenloom(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.err);
        assert!(r.out.is_empty(), "{args:?}: {}", r.out);
        let usage = r.err.starts_with("error: ") || r.err.contains("Usage: tokenloom");
        assert!(usage && r.err.contains("--help"), "{args:?}: {}", r.err);
    }
    let r = tokenloom(&["index", "x.bin"]);
    assert!(r.err.starts_with("error: ") && r.err.contains("--eos"));

    // An EOS id out of the dtype's range is an invalid argument too.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("t.bin");
    write_u16(&bin, false, &[1, 2]);
    let r = tokenloom(&["index", s(&bin), "--dtype", "u16", "--eos", "70000"]);
    assert_eq!(r.code, 2);
    assert!(r.err.contains("invalid eos"), "{}", r.err);

    let r = tokenloom(&["--help"]);
    assert_eq!(r.code, 0);
    assert!(r.err.is_empty());
    for cmd in ["build", "convert", "index", "inspect", "order", "verify"] {
        let listed = format!("\n  {cmd} ");
        assert!(r.out.contains(&listed), "{cmd} missing in {}", r.out);
    }
    assert!(r.out.contains("--quiet"), "{}", r.out);
    // The standalone binary names where build runs.
    let r = tokenloom(&["build", "corpus.jsonl", "-o", "out"]);
    assert_eq!(r.code, 2);
    assert!(r.err.contains("pip install tokenloom"), "{}", r.err);
    let r = tokenloom(&["--version"]);
    assert_eq!(r.code, 0);
    assert_eq!(
        r.out.trim(),
        format!("tokenloom {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn missing_path_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dataset");
    for cmd in ["inspect", "verify"] {
        let r = tokenloom(&[cmd, s(&missing)]);
        assert_eq!(r.code, 1, "{cmd}");
        assert!(r.out.is_empty());
        assert!(r.err.starts_with("error: "), "{}", r.err);
        assert!(r.err.contains(s(&missing)), "{cmd}: {}", r.err);
    }
    let r = tokenloom(&["index", s(&missing), "--dtype", "u16", "--eos", "0"]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains(s(&missing)), "{}", r.err);
}

#[test]
fn cancelled_jobs_exit_130_and_commit_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancelToken::new();
    cancel.cancel();

    let bin = dir.path().join("t.bin");
    write_u16(&bin, false, &[1, 0, 2, 0]);
    let r = tokenloom_with(&["index", s(&bin), "--dtype", "u16", "--eos", "0"], &cancel);
    assert_eq!(r.code, 130);
    assert!(r.err.contains("cancelled"), "{}", r.err);
    assert!(!dir.path().join("t.idx").exists());

    let root = dir.path().join("ds");
    make_dataset(&root);
    let r = tokenloom_with(&["verify", s(&root)], &cancel);
    assert_eq!(r.code, 130);
    assert!(r.out.is_empty());
}
