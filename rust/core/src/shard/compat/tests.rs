//! Tests of the foreign-format readers and of `convert`.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::convert::{convert, Target};
use super::{datatrove, detect, megatron, Source};
use crate::error::Error;
use crate::progress::NoProgress;
use crate::shard::dtype::{DType, Tokens};
use crate::shard::reader::Dataset;
use crate::shard::verify::{verify_dataset, VerifyOptions};

fn docs() -> Vec<Vec<u16>> {
    vec![vec![1, 2, 3], vec![], vec![7, 8], vec![9; 5]]
}

fn lens(d: &[Vec<u16>]) -> Vec<u64> {
    d.iter().map(|x| x.len() as u64).collect()
}

fn bin_bytes(d: &[Vec<u16>]) -> Vec<u8> {
    d.iter()
        .flatten()
        .flat_map(|t| t.to_le_bytes())
        .collect::<Vec<u8>>()
}

/// Writes a Megatron pair for `d` at `dir/name` and returns the prefix.
fn write_megatron(dir: &Path, name: &str, d: &[Vec<u16>]) -> PathBuf {
    let prefix = dir.join(name);
    let idx = megatron::encode(DType::U16, &lens(d), &prefix).unwrap();
    std::fs::write(prefix.with_extension("bin"), bin_bytes(d)).unwrap();
    std::fs::write(prefix.with_extension("idx"), idx).unwrap();
    prefix
}

fn read_all(ds: &Dataset) -> Vec<Vec<u32>> {
    (0..ds.num_docs())
        .map(|i| ds.doc(i).unwrap().to_vec())
        .collect()
}

fn widened(d: &[Vec<u16>]) -> Vec<Vec<u32>> {
    d.iter()
        .map(|x| x.iter().map(|&t| t as u32).collect())
        .collect()
}

fn corrupt_at(e: Error) -> (PathBuf, u64) {
    match e {
        Error::Corrupt { path, offset, .. } => (path, offset),
        other => panic!("expected a corruption error, got {other}"),
    }
}

#[test]
fn megatron_opens_by_bin_idx_and_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = write_megatron(dir.path(), "web_text_document", &docs());
    for p in [
        prefix.clone(),
        prefix.with_extension("bin"),
        prefix.with_extension("idx"),
    ] {
        let ds = Dataset::open(&p).unwrap();
        assert_eq!(ds.dtype(), DType::U16);
        assert_eq!(ds.num_docs(), 4);
        assert_eq!(ds.num_tokens(), 10);
        assert_eq!(read_all(&ds), widened(&docs()));
        assert_eq!(ds.doc_lengths().unwrap(), lens(&docs()));
        assert_eq!(ds.locate_token(4).unwrap(), (2, 1));
        verify_dataset(&ds, VerifyOptions::default(), &NoProgress).unwrap();
    }
    assert!(matches!(
        detect(&prefix).unwrap(),
        Some(Source::Megatron { .. })
    ));
}

#[test]
fn megatron_int32_and_int16_codes_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("d");
    // Two documents of int32 tokens: [5, 6], [70000].
    let toks: Vec<u8> = [5i32, 6, 70000]
        .iter()
        .flat_map(|t| t.to_le_bytes())
        .collect();
    let idx = megatron::encode(DType::U32, &[2, 1], &prefix).unwrap();
    assert_eq!(idx[17], 4);
    std::fs::write(prefix.with_extension("bin"), &toks).unwrap();
    std::fs::write(prefix.with_extension("idx"), &idx).unwrap();
    let ds = Dataset::open(&prefix).unwrap();
    assert_eq!(ds.dtype(), DType::U32);
    assert_eq!(read_all(&ds), vec![vec![5, 6], vec![70000]]);
    // int16 (code 3) reads as u16.
    let mut idx = megatron::encode(DType::U16, &[1, 1], &prefix).unwrap();
    idx[17] = 3;
    std::fs::write(prefix.with_extension("bin"), [1u8, 0, 2, 0]).unwrap();
    std::fs::write(prefix.with_extension("idx"), &idx).unwrap();
    assert_eq!(
        read_all(&Dataset::open(&prefix).unwrap()),
        vec![vec![1], vec![2]]
    );
}

#[test]
fn megatron_bad_headers_are_clean_errors() {
    let p = Path::new("x.idx");
    let b = Path::new("x.bin");
    let good = megatron::encode(DType::U16, &lens(&docs()), p).unwrap();
    let n = 20u64;
    let ok = megatron::parse(&good, p, b, n);
    assert!(ok.is_ok());

    let mut bad = good.clone();
    bad[0] = b'X';
    assert_eq!(corrupt_at(megatron::parse(&bad, p, b, n).unwrap_err()).1, 0);

    let mut bad = good.clone();
    bad[9] = 2;
    assert!(matches!(
        megatron::parse(&bad, p, b, n),
        Err(Error::UnsupportedVersion {
            found: 2,
            offset: 9,
            ..
        })
    ));

    for code in [1u8, 2, 5, 6, 7, 0, 9, 200] {
        let mut bad = good.clone();
        bad[17] = code;
        let e = megatron::parse(&bad, p, b, n).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("code {code}")), "{msg}");
        assert_eq!(corrupt_at(e).1, 17);
    }

    // Truncated index, at every length.
    for cut in 0..good.len() {
        let e = megatron::parse(&good[..cut], p, b, n).unwrap_err();
        assert_eq!(corrupt_at(e).0, p);
    }
    // Truncated or padded token file.
    let (path, at) = corrupt_at(megatron::parse(&good, p, b, 18).unwrap_err());
    assert_eq!((path.as_path(), at), (b, 18));
    assert!(megatron::parse(&good, p, b, 22).is_err());
    assert!(megatron::parse(&good, p, b, 19).is_err());

    // First pointer not 0; document table not starting at 0 / ending at N.
    let ptrs = megatron::HEADER_LEN + 4 * 4;
    let mut bad = good.clone();
    bad[ptrs] = 2;
    assert_eq!(
        corrupt_at(megatron::parse(&bad, p, b, n).unwrap_err()).1,
        ptrs as u64
    );
    let docs_at = ptrs + 8 * 4;
    let mut bad = good.clone();
    bad[docs_at] = 1;
    assert!(megatron::parse(&bad, p, b, n).is_err());
    let mut bad = good.clone();
    let last = bad.len() - 8;
    bad[last] = 3;
    assert!(megatron::parse(&bad, p, b, n).is_err());
}

#[test]
fn megatron_pointer_damage_is_found_on_read_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = write_megatron(dir.path(), "d", &docs());
    let idx_path = prefix.with_extension("idx");
    let mut idx = std::fs::read(&idx_path).unwrap();
    // Pointer of sequence 2 moved past the end of the data.
    let at = megatron::HEADER_LEN + 4 * 4 + 8 * 2;
    idx[at..at + 8].copy_from_slice(&1000i64.to_le_bytes());
    std::fs::write(&idx_path, &idx).unwrap();
    let ds = Dataset::open(&prefix).unwrap();
    assert_eq!(ds.doc(0).unwrap().to_vec(), vec![1, 2, 3]);
    assert!(matches!(ds.doc(2), Err(Error::Corrupt { .. })));
    assert!(ds.doc(1).is_err());
    let e = verify_dataset(&ds, VerifyOptions::default(), &NoProgress).unwrap_err();
    assert_eq!(corrupt_at(e).0, idx_path);
    assert!(ds.doc_lengths().is_err());

    // A length that disagrees with the next pointer (non-contiguous data).
    let mut idx = megatron::encode(DType::U16, &lens(&docs()), &prefix).unwrap();
    idx[megatron::HEADER_LEN] = 2;
    std::fs::write(&idx_path, &idx).unwrap();
    let ds = Dataset::open(&prefix).unwrap();
    let (path, at) = corrupt_at(ds.doc(0).unwrap_err());
    assert_eq!((path, at), (idx_path, megatron::HEADER_LEN as u64));
}

/// The byte offset of entry `k` of the document table of a Megatron `.idx`
/// with `n` sequences.
fn document_entry_at(n: usize, k: usize) -> usize {
    megatron::HEADER_LEN + 12 * n + 8 * k
}

/// A Megatron pair whose `n` sequences are grouped into documents by
/// `table` (which must start with 0 and end with `n`), as megatron-core
/// writes it when a document holds several sequences.
fn write_grouped(dir: &Path, table: &[i64]) -> PathBuf {
    let prefix = write_megatron(dir, "g", &docs());
    let n = docs().len();
    let mut idx = std::fs::read(prefix.with_extension("idx")).unwrap();
    idx.truncate(document_entry_at(n, 0));
    for v in table {
        idx.extend_from_slice(&v.to_le_bytes());
    }
    idx[26..34].copy_from_slice(&(table.len() as u64).to_le_bytes());
    std::fs::write(prefix.with_extension("idx"), &idx).unwrap();
    prefix
}

#[test]
fn megatron_document_table_must_not_decrease() {
    let dir = tempfile::tempdir().unwrap();
    // Sequences grouped into documents, empty documents included: valid.
    for table in [&[0i64, 2, 4][..], &[0, 1, 1, 3, 4], &[0, 4], &[0, 0, 4, 4]] {
        let prefix = write_grouped(dir.path(), table);
        let ds = Dataset::open(&prefix).unwrap();
        assert_eq!(read_all(&ds), widened(&docs()));
        verify_dataset(&ds, VerifyOptions::default(), &NoProgress)
            .unwrap_or_else(|e| panic!("{table:?}: {e}"));
    }
    // A table that goes back (or past N) in the middle still opens (opening
    // checks only its ends), but verify names the first bad entry.
    for (table, bad) in [
        (&[0i64, 3, 1, 4][..], 2),
        (&[0, 2, 1, 2, 4], 2),
        (&[0, 1, 0, 4], 2),
        (&[0, 5, 4], 1),
        (&[0, -1, 4], 1),
    ] {
        let prefix = write_grouped(dir.path(), table);
        let ds = Dataset::open(&prefix).unwrap();
        assert_eq!(read_all(&ds), widened(&docs()), "{table:?}");
        let e = verify_dataset(&ds, VerifyOptions::default(), &NoProgress).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("document table entry {bad} ")),
            "{table:?}: {msg}"
        );
        assert_eq!(
            corrupt_at(e),
            (
                prefix.with_extension("idx"),
                document_entry_at(docs().len(), bad) as u64
            ),
            "{table:?}"
        );
    }
}

#[test]
fn megatron_index_size_is_exact() {
    let p = Path::new("x.idx");
    let b = Path::new("x.bin");
    let good = megatron::encode(DType::U16, &lens(&docs()), p).unwrap();
    let n = docs().len();
    let bin_len = 2 * lens(&docs()).iter().sum::<u64>();
    megatron::parse(&good, p, b, bin_len).unwrap();
    // A multimodal index carries one mode byte per sequence: exactly N more.
    let mut modes = good.clone();
    modes.extend(std::iter::repeat_n(0u8, n));
    megatron::parse(&modes, p, b, bin_len).unwrap();
    // Any other number of stray bytes is refused, with the sizes in the message.
    for extra in [1, 2, 3, 5, 7, 8, 16, n + 1, 2 * n, 4096] {
        let mut bad = good.clone();
        bad.extend(std::iter::repeat_n(0xA5u8, extra));
        let e = megatron::parse(&bad, p, b, bin_len).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!(
                "need {} bytes, but the file has {} bytes",
                good.len(),
                bad.len()
            )),
            "{extra}: {msg}"
        );
        assert_eq!(corrupt_at(e), (p.to_path_buf(), 18), "{extra}");
    }
}

#[test]
fn missing_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = write_megatron(dir.path(), "d", &docs());
    std::fs::remove_file(prefix.with_extension("bin")).unwrap();
    let e = Dataset::open(&prefix).unwrap_err();
    assert_eq!(e.path(), Some(prefix.with_extension("bin").as_path()));
    let e = Dataset::open(dir.path().join("none.ds")).unwrap_err();
    assert_eq!(e.path(), Some(dir.path().join("none.ds").as_path()));
}

fn write_datatrove(dir: &Path, name: &str, d: &[Vec<u16>], meta: Option<&str>) -> PathBuf {
    let ds = dir.join(name);
    std::fs::write(&ds, bin_bytes(d)).unwrap();
    let mut end = 0u64;
    let index: Vec<u8> = d
        .iter()
        .flat_map(|x| {
            end += x.len() as u64;
            end.to_le_bytes()
        })
        .collect();
    std::fs::write(dir.join(format!("{name}.index")), index).unwrap();
    if let Some(m) = meta {
        std::fs::write(dir.join(format!("{name}.metadata")), m).unwrap();
    }
    ds
}

#[test]
fn datatrove_files_and_folders_open() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_datatrove(dir.path(), "000_a.ds", &docs(), Some("gpt2|2\n10\n10 T"));
    let b = write_datatrove(dir.path(), "001_b.ds", &docs()[..2], None);
    let ds = Dataset::open(&a).unwrap();
    assert_eq!(read_all(&ds), widened(&docs()));
    let ds = Dataset::open(a.with_extension("ds.index")).unwrap();
    assert_eq!(ds.num_docs(), 4);
    let ds = Dataset::open(&b).unwrap();
    assert_eq!(ds.dtype(), DType::U16);
    let ds = Dataset::open(dir.path()).unwrap();
    assert_eq!(ds.shards().len(), 2);
    assert_eq!(ds.num_docs(), 6);
    assert_eq!(ds.doc(5).unwrap().to_vec(), Vec::<u32>::new());
    assert_eq!(ds.doc(4).unwrap().to_vec(), vec![1, 2, 3]);
    verify_dataset(&ds, VerifyOptions::default(), &NoProgress).unwrap();
    assert_eq!(ds.locate_token(12).unwrap(), (4, 2));
}

#[test]
fn datatrove_token_size_from_metadata_or_file() {
    let p = Path::new("x.ds.index");
    let d = Path::new("x.ds");
    let index: Vec<u8> = [3u64, 5].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(
        datatrove::parse(&index, p, d, 10, None).unwrap().0.dtype,
        DType::U16
    );
    assert_eq!(
        datatrove::parse(&index, p, d, 20, None).unwrap().0.dtype,
        DType::U32
    );
    let m = Path::new("x.ds.metadata");
    let meta = datatrove::parse_metadata("Unknown Tokenizer|4|4\n5\n5 T", m).unwrap();
    assert_eq!((meta.dtype, meta.num_tokens), (DType::U32, 5));
    assert_eq!(meta.tokenizer, "Unknown Tokenizer|4");
    assert_eq!(
        datatrove::parse_metadata("gpt2\n5\n", m).unwrap().dtype,
        DType::U16
    );
    assert!(datatrove::parse_metadata("gpt2|3\n5\n", m).is_err());
    assert!(datatrove::parse_metadata("gpt2|2\nfive\n", m).is_err());
    // Metadata disagreeing with the index or the file size.
    let bad = datatrove::parse_metadata("gpt2|2\n6\n", m).unwrap();
    assert_eq!(
        corrupt_at(datatrove::parse(&index, p, d, 10, Some((&bad, m))).unwrap_err()).0,
        m
    );
    assert_eq!(
        corrupt_at(datatrove::parse(&index, p, d, 10, Some((&meta, m))).unwrap_err()).0,
        d
    );
    // Neither 2 nor 4 bytes per token; truncated token file; truncated index.
    assert_eq!(
        corrupt_at(datatrove::parse(&index, p, d, 9, None).unwrap_err()).0,
        d
    );
    assert_eq!(
        corrupt_at(datatrove::parse(&index, p, d, 14, None).unwrap_err()).0,
        d
    );
    let (path, at) = corrupt_at(datatrove::parse(&index[..12], p, d, 10, None).unwrap_err());
    assert_eq!((path.as_path(), at), (p, 8));
    // No documents: no tokens.
    assert!(datatrove::parse(&[], p, d, 0, None).is_ok());
    assert!(datatrove::parse(&[], p, d, 2, None).is_err());
}

#[test]
fn datatrove_backwards_ends_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let ds_path = write_datatrove(dir.path(), "x.ds", &docs(), None);
    let index_path = dir.path().join("x.ds.index");
    let ends: Vec<u8> = [3u64, 1, 5, 10]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(&index_path, ends).unwrap();
    let ds = Dataset::open(&ds_path).unwrap();
    assert_eq!(ds.doc(0).unwrap().len(), 3);
    let (path, at) = corrupt_at(ds.doc(1).unwrap_err());
    assert_eq!((path.as_path(), at), (index_path.as_path(), 8));
    assert!(ds.doc_lengths().is_err());
    assert!(verify_dataset(&ds, VerifyOptions::default(), &NoProgress).is_err());
}

#[test]
fn convert_round_trips_through_megatron_and_tokenloom() {
    let dir = tempfile::tempdir().unwrap();
    let ds_path = write_datatrove(dir.path(), "x.ds", &docs(), None);
    let out = dir.path().join("out_text_document");
    let r = convert(&ds_path, &out, Target::Megatron, false, &NoProgress).unwrap();
    assert_eq!(
        r.written,
        vec![out.with_extension("bin"), out.with_extension("idx")]
    );
    assert_eq!(read_all(&Dataset::open(&out).unwrap()), widened(&docs()));
    assert!(matches!(
        convert(&ds_path, &out, Target::Megatron, false, &NoProgress),
        Err(Error::AlreadyExists { .. })
    ));
    let tl = dir.path().join("tl");
    convert(&out, &tl, Target::Tokenloom, false, &NoProgress).unwrap();
    let back = Dataset::open(&tl).unwrap();
    assert_eq!(read_all(&back), widened(&docs()));
    verify_dataset(&back, VerifyOptions::default(), &NoProgress).unwrap();
    // No temporaries are left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with(".tmp.")), "{names:?}");
}

#[test]
fn convert_to_megatron_and_back_keeps_eos_vocab_and_tokenizer() {
    use crate::shard::writer::{DatasetWriter, WriterOptions};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let mut w = DatasetWriter::create(
        &src,
        WriterOptions {
            eos_id: Some(0),
            vocab_size: Some(50),
            tokenizer: Some("tok-1".into()),
            ..Default::default()
        },
    )
    .unwrap();
    for d in docs() {
        w.add(&d).unwrap();
    }
    w.close().unwrap();
    // The destination's directory does not exist yet: it is created.
    let mega = dir.path().join("new").join("dir").join("web_text_document");
    convert(&src, &mega, Target::Megatron, false, &NoProgress).unwrap();
    let read = Dataset::open(&mega).unwrap();
    assert_eq!(read.manifest().eos_id, Some(0));
    let back = dir.path().join("back");
    convert(&mega, &back, Target::Tokenloom, false, &NoProgress).unwrap();
    let m = Dataset::open(&back).unwrap().manifest().clone();
    assert_eq!(
        (m.eos_id, m.vocab_size, m.tokenizer.as_deref()),
        (Some(0), Some(50), Some("tok-1"))
    );
    // A note left from another version of the pair is not used.
    let other = dir.path().join("other");
    let mut w = DatasetWriter::create(&other, WriterOptions::default()).unwrap();
    w.add(&[1u16]).unwrap();
    w.close().unwrap();
    convert(&other, &mega, Target::Megatron, true, &NoProgress).unwrap();
    let read = Dataset::open(&mega).unwrap();
    assert_eq!(
        (read.manifest().eos_id, read.manifest().vocab_size),
        (None, None)
    );
    assert!(!megatron::meta_path(&mega.with_extension("bin")).exists());
}

#[test]
fn convert_refuses_u32_tokens_megatron_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("big.ds");
    std::fs::write(
        &ds,
        [1u32, u32::MAX]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    std::fs::write(dir.path().join("big.ds.index"), 2u64.to_le_bytes()).unwrap();
    std::fs::write(dir.path().join("big.ds.metadata"), "t|4\n2\n").unwrap();
    let out = dir.path().join("m");
    let e = convert(&ds, &out, Target::Megatron, false, &NoProgress).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert!(!out.with_extension("bin").exists() && !out.with_extension("idx").exists());
    let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 3);
}

#[test]
fn tokens_are_zero_copy_views_of_the_map() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = write_megatron(dir.path(), "d", &docs());
    let ds = Dataset::open(&prefix).unwrap();
    let all = ds.shards()[0].token_bytes().as_ptr() as usize;
    match ds.doc(2).unwrap() {
        Tokens::U16(t) => assert_eq!(t.as_ptr() as usize, all + 3 * 2),
        Tokens::U32(_) => panic!("u16 expected"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// Arbitrary byte edits and truncations of a Megatron `.idx` never panic:
    /// opening and reading either give in-bounds documents or a clean error.
    #[test]
    fn mutated_megatron_index_never_panics(
        lengths in proptest::collection::vec(0u64..40, 0..16),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        bin_delta in -3i64..3,
    ) {
        let p = Path::new("x.idx");
        let b = Path::new("x.bin");
        let mut bytes = megatron::encode(DType::U16, &lengths, p).unwrap();
        for (at, val) in edits { let i = at.index(bytes.len()); bytes[i] = val; }
        if let Some(c) = cut { let n = c.index(bytes.len()); bytes.truncate(n); }
        let total: u64 = lengths.iter().sum::<u64>() * 2;
        let bin_len = (total as i64 + bin_delta).max(0) as u64;
        if let Ok((header, layout)) = megatron::parse(&bytes, p, b, bin_len) {
            prop_assert_eq!(header.num_tokens * 2, bin_len);
            let v = crate::shard::index::IndexView::from_parsed(&bytes, header, layout);
            let _ = v.check_all(p);
            let mut out = Vec::new();
            let _ = v.doc_lengths_into(&mut out, p);
            for j in 0..header.num_docs.min(64) as usize {
                if let Ok((s, e)) = v.doc_range(j, p) {
                    prop_assert!(s <= e && e <= header.num_tokens);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// An index opens only at its exact size (or that plus one mode byte per
    /// sequence), whatever the documents and the stray bytes.
    #[test]
    fn megatron_index_opens_only_at_its_size(
        lengths in proptest::collection::vec(0u64..40, 0..16),
        extra in 1usize..64,
    ) {
        let p = Path::new("x.idx");
        let b = Path::new("x.bin");
        let mut bytes = megatron::encode(DType::U16, &lengths, p).unwrap();
        let bin_len = 2 * lengths.iter().sum::<u64>();
        prop_assert!(megatron::parse(&bytes, p, b, bin_len).is_ok());
        bytes.extend(std::iter::repeat_n(1u8, extra));
        let opened = megatron::parse(&bytes, p, b, bin_len).is_ok();
        prop_assert_eq!(opened, extra == lengths.len());
    }
}
