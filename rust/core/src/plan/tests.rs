use proptest::prelude::*;

use super::*;
use crate::shard::{DatasetWriter, WriterOptions};

/// Writes `docs` (token i of document d is `d * 1000 + i + 1`, unique) in
/// small shards and opens the dataset.
pub(crate) fn dataset(dir: &std::path::Path, lens: &[u64]) -> Dataset {
    let opts = WriterOptions {
        dtype: crate::shard::DType::U32,
        shard_bytes: 64,
        ..Default::default()
    };
    let mut w = DatasetWriter::create(dir, opts).unwrap();
    for (d, &n) in lens.iter().enumerate() {
        let doc: Vec<u32> = (0..n as u32).map(|i| d as u32 * 1000 + i + 1).collect();
        w.add(&doc).unwrap();
    }
    w.close().unwrap();
    Dataset::open(dir).unwrap()
}

fn tokens_of(ds: &Dataset, segs: &[Segment]) -> Vec<u32> {
    let mut out = Vec::new();
    for s in segs {
        let d = ds.doc(s.doc).unwrap().to_vec();
        out.extend_from_slice(&d[s.start as usize..(s.start + s.len) as usize]);
    }
    out
}

fn all_rows(ds: &Dataset, plan: &Plan) -> Vec<Vec<Segment>> {
    let mut segs = Vec::new();
    (0..plan.num_samples())
        .map(|i| {
            plan.sample(ds, i, &mut segs).unwrap();
            segs.clone()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Concat windows are exactly the stream's `seq_len + 1` windows at stride `seq_len`.
    #[test]
    fn concat_matches_the_token_stream(lens in proptest::collection::vec(0u64..30, 1..15), seq_len in 1u64..20) {
        let dir = tempfile::tempdir().unwrap();
        let ds = dataset(dir.path(), &lens);
        let stream: Vec<u32> = (0..ds.num_docs()).flat_map(|d| ds.doc(d).unwrap().to_vec()).collect();
        let plan = Plan::concat(&ds, seq_len).unwrap();
        prop_assert_eq!(plan.num_samples(), (stream.len() as u64).saturating_sub(1) / seq_len);
        for (i, segs) in all_rows(&ds, &plan).iter().enumerate() {
            let at = i * seq_len as usize;
            prop_assert_eq!(tokens_of(&ds, segs), stream[at..at + seq_len as usize + 1].to_vec());
            prop_assert!(segs.iter().all(|s| s.len > 0));
        }
    }

    /// Packing covers every token of every document exactly once, rows never
    /// overflow, and only split documents cross rows.
    #[test]
    fn pack_covers_each_token_once(lens in proptest::collection::vec(0u64..40, 1..30), seq_len in 1u64..25) {
        let dir = tempfile::tempdir().unwrap();
        let ds = dataset(dir.path(), &lens);
        let plan = Plan::pack(&ds, seq_len).unwrap();
        let mut covered: Vec<Vec<bool>> = lens.iter().map(|&n| vec![false; n as usize]).collect();
        for segs in all_rows(&ds, &plan) {
            prop_assert!(segs.iter().map(|s| s.len).sum::<u64>() <= seq_len + 1);
            for s in &segs {
                prop_assert!(s.len > 0);
                for t in s.start..s.start + s.len {
                    prop_assert!(!std::mem::replace(&mut covered[s.doc as usize][t as usize], true));
                }
                // A piece is a whole document unless the document is longer than a row.
                if lens[s.doc as usize] <= seq_len + 1 {
                    prop_assert_eq!(s.len, lens[s.doc as usize]);
                }
            }
        }
        prop_assert!(covered.iter().all(|d| d.iter().all(|&c| c)));
    }

    /// Ordered plans follow the order file context by context.
    #[test]
    fn ordered_follows_contexts(lens in proptest::collection::vec(0u64..30, 1..20), seq_len in 1u64..16, seed in any::<u64>()) {
        let dir = tempfile::tempdir().unwrap();
        let ds = dataset(dir.path(), &lens);
        let n = lens.len() as u64;
        let perm = crate::shuffle::Permutation::new(n, seed);
        let docs: Vec<u64> = (0..n).map(|i| perm.get(i)).collect();
        let mid = n / 2;
        let order = Order::new(&ds, docs.clone(), vec![0, mid, n]).unwrap();
        let plan = Plan::ordered(&ds, seq_len, &order).unwrap();
        let rows = all_rows(&ds, &plan);
        let flat: Vec<(u64, u64)> = rows.iter().flatten().flat_map(|s| (s.start..s.start + s.len).map(move |t| (s.doc, t))).collect();
        let want: Vec<(u64, u64)> = docs.iter().flat_map(|&d| (0..lens[d as usize]).map(move |t| (d, t))).collect();
        prop_assert_eq!(flat, want);
        // No row mixes the two contexts.
        let first: std::collections::HashSet<u64> = docs[..mid as usize].iter().copied().collect();
        for r in &rows {
            let sides: std::collections::HashSet<bool> = r.iter().map(|s| first.contains(&s.doc)).collect();
            prop_assert!(sides.len() <= 1);
            prop_assert!(r.iter().map(|s| s.len).sum::<u64>() <= seq_len + 1);
        }
    }
}

#[test]
fn pack_wastes_little() {
    let dir = tempfile::tempdir().unwrap();
    let lens: Vec<u64> = (0..400).map(|i| (i * 7919) % 300 + 1).collect();
    let ds = dataset(dir.path(), &lens);
    let plan = Plan::pack(&ds, 511).unwrap();
    let total: u64 = lens.iter().sum();
    let capacity = plan.num_samples() * 512;
    assert!(
        total as f64 / capacity as f64 > 0.97,
        "fill {}",
        total as f64 / capacity as f64
    );
}

#[test]
fn seq_len_zero_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path(), &[3]);
    assert!(matches!(
        Plan::concat(&ds, 0),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        Plan::pack(&ds, 0),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn order_file_round_trip_and_damage() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(&dir.path().join("ds"), &[3, 4, 5, 6]);
    let order = Order::new(&ds, vec![2, 0, 3, 1], vec![0, 2, 4]).unwrap();
    let path = dir.path().join("o.order");
    order.write(&path).unwrap();
    assert_eq!(Order::read(&path).unwrap(), order);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[50] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(Order::read(&path), Err(Error::Corrupt { .. })));
    assert!(
        Order::new(&ds, vec![0, 0], vec![0, 2]).is_err(),
        "duplicate id"
    );
    assert!(
        Order::new(&ds, vec![9], vec![0, 1]).is_err(),
        "id past the end"
    );
    assert!(
        Order::new(&ds, vec![0, 1], vec![0, 1]).is_err(),
        "starts do not end at n"
    );
    let other = dataset(&dir.path().join("other"), &[3, 4, 5, 7]);
    assert!(
        Plan::ordered(&other, 4, &order).is_err(),
        "order made for another dataset"
    );
}

#[test]
fn cache_round_trips_and_rebuilds_when_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(&dir.path().join("ds"), &[5, 9, 2, 14, 7, 1, 3]);
    let cache_dir = dir.path().join("plans");
    let (built, hit) =
        cache::load_or_build(&ds, PlanMode::Pack, 8, None, Some(&cache_dir)).unwrap();
    assert!(!hit);
    let (cached, hit) =
        cache::load_or_build(&ds, PlanMode::Pack, 8, None, Some(&cache_dir)).unwrap();
    assert!(hit);
    assert_eq!(built.pieces(), cached.pieces());
    assert_eq!(built.fingerprint(), cached.fingerprint());
    let path = cache::plan_path(&cache_dir, &built);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[60] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (rebuilt, hit) =
        cache::load_or_build(&ds, PlanMode::Pack, 8, None, Some(&cache_dir)).unwrap();
    assert!(!hit);
    assert_eq!(rebuilt.pieces(), built.pieces());
    // Another seq_len is another file.
    let (other, hit) =
        cache::load_or_build(&ds, PlanMode::Pack, 4, None, Some(&cache_dir)).unwrap();
    assert!(!hit);
    assert_ne!(other.fingerprint(), built.fingerprint());
}

#[test]
fn an_order_file_being_written_elsewhere_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(&dir.path().join("ds"), &[3, 4, 5]);
    let path = dir.path().join("ds.order");
    let order = Order::new(&ds, vec![2, 0, 1], vec![0, 3]).unwrap();
    let held = crate::shard::TargetLock::file(&path, "write_order").unwrap();
    let e = order.write(&path).unwrap_err();
    assert!(matches!(e, crate::Error::Locked { .. }), "{e}");
    assert!(!path.exists());
    drop(held);
    order.write(&path).unwrap();
    assert_eq!(Order::read(&path).unwrap(), order);
}

#[test]
fn modes_are_named_as_parsed_and_name_their_cache_files() {
    for mode in [PlanMode::Concat, PlanMode::Pack, PlanMode::Ordered] {
        assert_eq!(PlanMode::parse(mode.name()).unwrap(), mode);
    }
    // docs/format.md: a cached plan is `<mode>-L<seq_len>-<fingerprint>.plan`.
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(&dir.path().join("ds"), &[5, 9, 2, 14]);
    let cache_dir = dir.path().join("plans");
    let (plan, _) = cache::load_or_build(&ds, PlanMode::Pack, 8, None, Some(&cache_dir)).unwrap();
    let names: Vec<String> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [format!("pack-L8-{:016x}.plan", plan.fingerprint())]);
}
