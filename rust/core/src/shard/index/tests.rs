use super::*;
use proptest::prelude::*;

fn header(n: u64, t: u64) -> IndexHeader {
    IndexHeader {
        dtype: DType::U16,
        num_docs: n,
        num_tokens: t,
        bin_offset: 0,
        bin_xxh3: 7,
    }
}

#[test]
fn round_trip() {
    let bytes = encode(&header(3, 10), &[0, 4, 4, 10]);
    let p = Path::new("x.idx");
    let v = IndexView::parse(&bytes, p).unwrap();
    assert_eq!(v.header, header(3, 10));
    assert_eq!(v.doc_range(1, p).unwrap(), (4, 4));
    v.check_all(p).unwrap();
    let mut lens = vec![];
    v.doc_lengths_into(&mut lens, p).unwrap();
    assert_eq!(lens, vec![4, 0, 6]);
}

#[test]
fn rejects_bad_magic_version_and_length() {
    let p = Path::new("x.idx");
    let good = encode(&header(1, 2), &[0, 2]);
    let mut b = good.clone();
    b[0] = b'X';
    assert!(matches!(
        IndexView::parse(&b, p),
        Err(Error::Corrupt { offset: 0, .. })
    ));
    let mut b = good.clone();
    b[8] = 2;
    assert!(matches!(
        IndexView::parse(&b, p),
        Err(Error::UnsupportedVersion { found: 2, .. })
    ));
    assert!(IndexView::parse(&good[..good.len() - 1], p).is_err());
}

#[test]
fn backwards_offsets_are_found() {
    let p = Path::new("x.idx");
    let bytes = encode(&header(3, 10), &[0, 8, 3, 10]);
    let v = IndexView::parse(&bytes, p).unwrap();
    assert!(matches!(
        v.check_all(p),
        Err(Error::Corrupt { offset: 64, .. })
    ));
    assert!(v.doc_range(1, p).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// Arbitrary byte edits never panic: parsing and reading either
    /// succeed with in-bounds ranges or return an error.
    #[test]
    fn mutated_index_never_panics(
        lens in proptest::collection::vec(0u64..50, 0..20),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut offsets = vec![0u64];
        for l in &lens { offsets.push(offsets.last().unwrap() + l); }
        let total = *offsets.last().unwrap();
        let mut bytes = encode(&header(lens.len() as u64, total), &offsets);
        for (at, val) in edits { let i = at.index(bytes.len()); bytes[i] = val; }
        if let Some(c) = cut { let n = c.index(bytes.len()); bytes.truncate(n); }
        let p = Path::new("x.idx");
        if let Ok(v) = IndexView::parse(&bytes, p) {
            let _ = v.check_all(p);
            for j in 0..v.header.num_docs.min(64) as usize {
                if let Ok((s, e)) = v.doc_range(j, p) {
                    prop_assert!(s <= e && e <= v.header.num_tokens);
                }
            }
        }
    }
}
