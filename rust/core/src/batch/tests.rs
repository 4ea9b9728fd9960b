use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::order_file::Order;
use crate::plan::{Boundaries, Plan, PlanMode};
use crate::shard::Dataset;

fn cfg(seq_len: u64, ignore: Option<i64>) -> BatchConfig {
    BatchConfig {
        seq_len,
        dtype: OutDType::I64,
        ignore_index: ignore,
        pad_id: 0,
        pad_label: -100,
        position_ids: true,
        doc_ids: true,
        boundaries: None,
    }
}

fn i64s(b: &IntBuf) -> Vec<i64> {
    match b {
        IntBuf::I64(v) => v.clone(),
        IntBuf::I32(v) => v.iter().map(|&x| x as i64).collect(),
    }
}

/// The row of `seq_len + 1` tokens (and their documents) a plan gives sample `id`.
fn reference_row(ds: &Dataset, plan: &Plan, id: u64) -> Vec<(i64, i64)> {
    let mut segs = Vec::new();
    plan.sample(ds, id, &mut segs).unwrap();
    let mut row = Vec::new();
    for s in &segs {
        let d = ds.doc(s.doc).unwrap().to_vec();
        for t in s.start..s.start + s.len {
            row.push((d[t as usize] as i64, s.doc as i64));
        }
    }
    row
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Inputs, labels, positions, doc ids and cu_seqlens agree with the plan's
    /// rows, for every mode and boundary setting: positions restart at each
    /// piece and cu_seqlens cut every piece with document boundaries, positions
    /// run over the row and cu_seqlens cut only rows with row boundaries; the
    /// mode picks (row for ordered plans) when none is asked for.
    #[test]
    fn batch_arrays_follow_the_rows(lens in proptest::collection::vec(0u64..30, 1..20), seq_len in 1u64..12, mode in 0u8..3, bounds in 0u8..3, flow in any::<bool>(), ignore in any::<bool>(), wide in any::<bool>(), seed in any::<u64>()) {
        let dir = tempfile::tempdir().unwrap();
        let ds = crate::plan::tests::dataset(dir.path(), &lens);
        let plan = match mode {
            0 => Plan::concat(&ds, seq_len).unwrap(),
            1 => Plan::pack(&ds, seq_len).unwrap(),
            _ => {
                // Every document in a seeded order, cut into two contexts.
                let n = lens.len() as u64;
                let p = crate::shuffle::Permutation::new(n, seed);
                let docs: Vec<u64> = (0..n).map(|i| p.get(i)).collect();
                let order = Order::with_meta(&ds, docs, vec![0, n / 2, n], flow, String::new()).unwrap();
                Plan::ordered(&ds, seq_len, &order).unwrap()
            }
        };
        let n = plan.num_samples();
        prop_assume!(n > 0);
        let samples: Vec<(usize, u64)> = (0..n.min(5)).map(|i| (0, (i * 7) % n)).collect();
        let mut c = cfg(seq_len, ignore.then_some(-7));
        if wide { c.dtype = OutDType::I32; }
        c.boundaries = [None, Some(Boundaries::Document), Some(Boundaries::Row)][bounds as usize];
        let per_row = match c.boundaries {
            Some(b) => b == Boundaries::Row,
            None => mode == 2,
        };
        let b = assemble(&samples, &[(&ds, &plan)], &c).unwrap();
        let (inp, lab) = (i64s(&b.input_ids), i64s(&b.labels));
        let pos = i64s(b.position_ids.as_ref().unwrap());
        let ids = b.doc_ids.clone().unwrap();
        let l = seq_len as usize;
        let mut cu = vec![0i32];
        for (r, &(_, id)) in samples.iter().enumerate() {
            let row = reference_row(&ds, &plan, id);
            for i in 0..l {
                let at = r * l + i;
                let here = row.get(i).copied();
                let next = row.get(i + 1).copied();
                prop_assert_eq!(inp[at], here.map_or(0, |x| x.0));
                prop_assert_eq!(ids[at], here.map_or(-1, |x| x.1));
                let want_label = match (here, next) {
                    (_, None) => -100,
                    (Some(h), Some(nx)) if ignore && h.1 != nx.1 => -7,
                    (_, Some(nx)) => nx.0,
                };
                prop_assert_eq!(lab[at], want_label, "row {} col {}", r, i);
                let starts_piece = i == 0 || ids[at] != ids[at - 1];
                if per_row {
                    prop_assert_eq!(pos[at], i as i64);
                } else if starts_piece {
                    prop_assert_eq!(pos[at], 0);
                    if i > 0 { cu.push(at as i32); }
                } else {
                    prop_assert_eq!(pos[at], pos[at - 1] + 1);
                }
            }
            cu.push(((r + 1) * l) as i32);
        }
        prop_assert_eq!(&b.cu_seqlens, &cu);
        // Leaving out the optional arrays changes nothing else.
        let lean = BatchConfig { position_ids: false, doc_ids: false, ..c };
        let b2 = assemble(&samples, &[(&ds, &plan)], &lean).unwrap();
        prop_assert!(b2.position_ids.is_none() && b2.doc_ids.is_none());
        prop_assert_eq!(b2.input_ids, b.input_ids);
        prop_assert_eq!(b2.labels, b.labels);
        prop_assert_eq!(b2.cu_seqlens, cu);
    }

    /// Resuming a loader from any batch's cursor continues the same stream,
    /// also with another number of workers.
    #[test]
    fn resume_is_exact(lens in proptest::collection::vec(1u64..20, 5..25), seq_len in 1u64..6, b in 1u64..4, seed in any::<u64>(), stop in 0usize..10, workers in 1u64..4, threads in 1usize..3) {
        let dir = tempfile::tempdir().unwrap();
        let ds = Arc::new(crate::plan::tests::dataset(dir.path(), &lens));
        let plan = Arc::new(Plan::concat(&ds, seq_len).unwrap());
        let n = plan.num_samples();
        prop_assume!(n >= b);
        let mixture = Mixture::new(vec![n], vec![1.0], seed, true).unwrap();
        let run = |start: Cursor, worker: u64, num_workers: u64| -> Vec<LoadedBatch> {
            let spec = LoaderSpec {
                sources: vec![Source { dataset: Arc::clone(&ds), plan: Arc::clone(&plan) }],
                mixture: mixture.clone(),
                sharding: Sharding { rank: 0, world: 1, worker, num_workers, batch_size: b, drop_last: true },
                batch: cfg(seq_len, None),
                start,
                threads,
                depth: 2,
            };
            let mut l = Loader::new(spec).unwrap();
            let mut out = Vec::new();
            while let Some(x) = l.next_batch() { out.push(x.unwrap()); }
            out
        };
        let full = run(mixture.start(0), 0, 1);
        prop_assert_eq!(full.len() as u64, n / b);
        let stop = stop.min(full.len().saturating_sub(1));
        let resumed_from = full[stop].after.clone();
        if stop + 1 == full.len() {
            // The last batch of an epoch points at the start of the next.
            prop_assert_eq!(resumed_from, mixture.start(1));
            return Ok(());
        }
        // The rest of the epoch, split over `workers` workers and merged round-robin.
        let parts: Vec<Vec<LoadedBatch>> = (0..workers).map(|w| run(resumed_from.clone(), w, workers)).collect();
        let mut merged = Vec::new();
        for i in 0.. {
            let mut any = false;
            for p in &parts { if let Some(x) = p.get(i) { merged.push(x.batch.clone()); any = true; } }
            if !any { break; }
        }
        let rest: Vec<Batch> = full[stop + 1..].iter().map(|x| x.batch.clone()).collect();
        prop_assert_eq!(merged, rest);
    }
}

#[test]
fn mixture_draws_from_each_source() {
    let dir = tempfile::tempdir().unwrap();
    let a = Arc::new(crate::plan::tests::dataset(
        &dir.path().join("a"),
        &[50; 20],
    ));
    let bds = Arc::new(crate::plan::tests::dataset(
        &dir.path().join("b"),
        &[30; 10],
    ));
    let pa = Arc::new(Plan::build(&a, PlanMode::Pack, 49, None).unwrap());
    let pb = Arc::new(Plan::build(&bds, PlanMode::Pack, 49, None).unwrap());
    let mixture = Mixture::new(
        vec![pa.num_samples(), pb.num_samples()],
        vec![0.75, 0.25],
        3,
        true,
    )
    .unwrap();
    let spec_plans = (Arc::clone(&pa), Arc::clone(&pb));
    let spec = LoaderSpec {
        sources: vec![
            Source {
                dataset: a,
                plan: pa,
            },
            Source {
                dataset: bds,
                plan: pb,
            },
        ],
        mixture: mixture.clone(),
        sharding: Sharding {
            rank: 0,
            world: 1,
            worker: 0,
            num_workers: 1,
            batch_size: 4,
            drop_last: true,
        },
        batch: cfg(49, None),
        start: mixture.start(0),
        threads: 2,
        depth: 2,
    };
    let mut l = Loader::new(spec).unwrap();
    let mut per_source = [0usize; 2];
    let mut named = std::collections::HashMap::new();
    let mut last = None;
    while let Some(x) = l.next_batch() {
        let x = x.unwrap();
        for (&s, &id) in x.batch.source_ids.iter().zip(&x.batch.sample_ids) {
            per_source[s as usize] += 1;
            let plan = if s == 0 { &spec_plans.0 } else { &spec_plans.1 };
            assert!((id as u64) < plan.num_samples());
            *named.entry((s, id)).or_insert(0u64) += 1;
        }
        last = Some(x.after);
    }
    // (source, sample id) names samples: a source read in whole passes (each a
    // permutation of its plan) gives every sample the same count, give or take one.
    for (src, plan) in [(0i64, &spec_plans.0), (1, &spec_plans.1)] {
        let counts: Vec<u64> = (0..plan.num_samples() as i64)
            .map(|id| named.get(&(src, id)).copied().unwrap_or(0))
            .collect();
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(hi - lo <= 1, "source {src}: counts {lo}..{hi}");
    }
    let total = per_source[0] + per_source[1];
    assert_eq!(total as u64, mixture.epoch_len() / 4 * 4);
    assert!(
        (per_source[0] as f64 / total as f64 - 0.75).abs() < 0.05,
        "{per_source:?}"
    );
    // The last batch's cursor is the next epoch's start (the dropped tail counted).
    assert_eq!(last.unwrap(), mixture.start(1));
}

#[test]
fn too_large_batches_are_rejected() {
    let sh = Sharding {
        rank: 0,
        world: 2,
        worker: 0,
        num_workers: 1,
        batch_size: 8,
        drop_last: true,
    };
    assert!(sh.check(15).is_err());
    assert!(sh.check(16).is_ok());
    let sh = Sharding {
        drop_last: false,
        world: 20,
        ..sh
    };
    assert!(sh.check(15).is_err(), "a rank would get no sample");
    assert!(sh.check(20).is_ok(), "one sample for each rank is enough");
    assert!(sh.check(0).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// The shards checked before a concat sample is planned cover every document it reads.
    #[test]
    fn checked_shards_cover_concat_samples(lens in proptest::collection::vec(0u64..30, 1..20), seq_len in 1u64..12) {
        let dir = tempfile::tempdir().unwrap();
        let ds = crate::plan::tests::dataset(dir.path(), &lens);
        let plan = Plan::concat(&ds, seq_len).unwrap();
        let mut segs = Vec::new();
        for id in 0..plan.num_samples() {
            let (first, last) = plan.token_span(id).unwrap();
            let span = ds.shards_of_tokens(first, last.min(ds.num_tokens() - 1));
            plan.sample(&ds, id, &mut segs).unwrap();
            for s in &segs {
                let (shard, _) = ds.locate(s.doc).unwrap();
                prop_assert!(span.contains(&shard), "sample {} reads shard {} outside {:?}", id, shard, span);
            }
        }
    }
}

#[test]
fn sample_ids_name_rows_and_bad_sources_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ds = crate::plan::tests::dataset(dir.path(), &[7, 3, 12, 5]);
    let plan = Plan::concat(&ds, 4).unwrap();
    let b = assemble(&[(0, 3), (0, 1)], &[(&ds, &plan)], &cfg(4, None)).unwrap();
    assert_eq!(b.sample_ids, vec![3, 1]);
    assert_eq!(b.source_ids, vec![0, 0]);
    let one = assemble(&[(0, 1)], &[(&ds, &plan)], &cfg(4, None)).unwrap();
    assert_eq!(i64s(&one.input_ids), i64s(&b.input_ids)[4..]);
    let err = assemble(&[(1, 0)], &[(&ds, &plan)], &cfg(4, None)).unwrap_err();
    assert!(err.to_string().contains("source 1 does not exist"), "{err}");
    let err = assemble(&[(0, 99)], &[(&ds, &plan)], &cfg(4, None)).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Every rank's last batch of an epoch points at the next epoch's start, with or
    /// without `drop_last`: also a rank past the end of a short last step, whose next
    /// pass would otherwise read nothing.
    #[test]
    fn every_rank_ends_the_epoch(n_docs in 3usize..30, world in 1u64..4, b in 1u64..4, drop_last in any::<bool>(), seed in any::<u64>()) {
        let dir = tempfile::tempdir().unwrap();
        let ds = Arc::new(crate::plan::tests::dataset(dir.path(), &vec![9; n_docs]));
        let plan = Arc::new(Plan::concat(&ds, 4).unwrap());
        let mixture = Mixture::new(vec![plan.num_samples()], vec![1.0], seed, true).unwrap();
        for rank in 0..world {
            let sharding = Sharding { rank, world, worker: 0, num_workers: 1, batch_size: b, drop_last };
            prop_assume!(sharding.check(mixture.epoch_len()).is_ok());
            let spec = LoaderSpec {
                sources: vec![Source { dataset: Arc::clone(&ds), plan: Arc::clone(&plan) }],
                mixture: mixture.clone(),
                sharding,
                batch: cfg(4, None),
                start: mixture.start(0),
                threads: 1,
                depth: 1,
            };
            let mut l = Loader::new(spec).unwrap();
            if l.is_empty() {
                // An epoch shorter than one global step reaches no sample of this rank
                // (drop_last=false): it reads nothing in any epoch, and has no last batch.
                prop_assert!(!drop_last && mixture.epoch_len() < world * b);
                prop_assert!(l.next_batch().is_none());
                continue;
            }
            let mut last = None;
            while let Some(x) = l.next_batch() { last = Some(x.unwrap().after); }
            prop_assert_eq!(last, Some(mixture.start(1)), "rank {} of {}", rank, world);
        }
    }
}

/// A provider over a local dataset that records what the loader announces.
#[derive(Debug)]
struct Recorder {
    base: Dataset,
    announced: std::sync::Mutex<Vec<Vec<usize>>>,
}

impl crate::shard::ShardProvider for Recorder {
    fn acquire(&self, _shards: &[usize]) -> crate::error::Result<Arc<Dataset>> {
        Ok(Arc::new(self.base.view(&[])?))
    }
    fn release(&self, _shards: &[usize]) {}
    fn prefetch(&self, shards: &[usize]) {
        self.announced.lock().unwrap().push(shards.to_vec());
    }
    fn lookahead(&self) -> usize {
        1
    }
    fn capacity(&self) -> crate::shard::Capacity {
        crate::shard::Capacity {
            limit: u64::MAX,
            fixed: 0,
        }
    }
}

/// A sequential read of one source announces, besides its next batch, the
/// shards of batches far ahead (the next shard is fetched long before the
/// read reaches it); a mixture, whose cursor skips one sample at a time,
/// announces only its next batches.
#[test]
fn one_source_announces_far_ahead_and_a_mixture_only_its_next_batches() {
    let dir = tempfile::tempdir().unwrap();
    // 400 documents of 16 u32 tokens: one per 64-byte shard.
    let base = crate::plan::tests::dataset(dir.path(), &[16; 400]);
    assert_eq!(base.shards().len(), 400);
    let first_announcement = |sources: usize| -> Vec<usize> {
        let rec = Arc::new(Recorder {
            base: Dataset::open(dir.path()).unwrap(),
            announced: Default::default(),
        });
        let ds = Arc::new(
            Dataset::open(dir.path())
                .unwrap()
                .with_provider(rec.clone()),
        );
        let plan = Arc::new(Plan::concat(&ds, 4).unwrap()); // sample i: tokens 4i..4i+5
        let n = plan.num_samples();
        let spec = LoaderSpec {
            sources: (0..sources)
                .map(|_| Source {
                    dataset: Arc::clone(&ds),
                    plan: Arc::clone(&plan),
                })
                .collect(),
            mixture: Mixture::new(vec![n; sources], vec![1.0; sources], 0, false).unwrap(),
            sharding: Sharding {
                rank: 0,
                world: 1,
                worker: 0,
                num_workers: 1,
                batch_size: 1,
                drop_last: true,
            },
            batch: cfg(4, None),
            start: Mixture::new(vec![n; sources], vec![1.0; sources], 0, false)
                .unwrap()
                .start(0),
            threads: 1,
            depth: 1,
        };
        let mut l = Loader::new(spec).unwrap();
        l.next_batch().unwrap().unwrap();
        drop(l);
        let first = rec.announced.lock().unwrap()[0].clone();
        first
    };
    // Batches 1, 2, 4, ..., 1024 ahead: sample 1024 starts in shard 256.
    let one = first_announcement(1);
    assert_eq!(one.iter().max(), Some(&256), "{one:?}");
    // Two sources drawn in turn: the next batch only, in the first shards.
    let two = first_announcement(2);
    assert!(two.iter().all(|&s| s <= 1), "{two:?}");
}
