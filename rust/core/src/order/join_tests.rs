use proptest::prelude::*;

use super::super::tests::topical_dataset;
use super::super::{order_dataset, partition, Input, OrderParams, Values};
use super::*;
use crate::NoProgress;

/// Unit vectors around `topics` directions, the first topic holding `heavy`
/// of every 10 documents.
fn clustered(n: usize, d: usize, topics: usize, heavy: usize, seed: u64) -> Vec<f32> {
    let noise = |i: usize, j: usize| {
        (crate::shuffle::mix64(seed ^ ((i * d + j) as u64)) % 1000) as f32 / 4000.0
    };
    let mut v = vec![0f32; n * d];
    for i in 0..n {
        let t = if i % 10 < heavy {
            0
        } else {
            1 + i % (topics - 1)
        };
        for j in 0..d {
            v[i * d + j] = noise(i, j) + if j == t % d { 1.0 } else { 0.0 };
        }
    }
    super::super::vectors::normalized(Values::F32(&v), d, n)
        .unwrap()
        .into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Every active document lands in exactly one part, parts stay between
    /// `min_size` and twice their share, and the result is deterministic.
    #[test]
    fn parts_cover_every_document_once_and_stay_balanced(
        n in 40usize..400, parts in 1usize..9, heavy in 0usize..10, min_size in 2usize..12,
        seed in any::<u64>(), holes in proptest::collection::vec(any::<bool>(), 400),
    ) {
        let d = 8;
        let v = clustered(n, d, 4, heavy, seed);
        let active: Vec<bool> = (0..n).map(|i| !holes[i] || i % 3 != 0).collect();
        let live = active.iter().filter(|&&a| a).count();
        prop_assume!(parts <= live);
        let p = partition(&v, d, &active, parts, min_size, seed, &NoProgress).unwrap();
        let mut seen = vec![false; n];
        for m in &p.members {
            prop_assert!(m.windows(2).all(|w| w[0] < w[1]));
            for &i in m {
                prop_assert!(active[i as usize] && !std::mem::replace(&mut seen[i as usize], true));
            }
        }
        prop_assert_eq!(&seen, &active);
        let cap = live.div_ceil(parts) * 2;
        let cap = cap.max(2 * min_size);
        for m in &p.members {
            prop_assert!(m.len() <= cap, "{} > {cap}", m.len());
            if live >= min_size {
                prop_assert!(m.len() >= min_size, "{} < {min_size}", m.len());
            }
        }
        prop_assert_eq!(p.centroids.len(), p.members.len() * d);
        let again = partition(&v, d, &active, parts, min_size, seed, &NoProgress).unwrap();
        prop_assert_eq!(again, p.clone());
        let c = chain(&p.centroids, d);
        let mut sorted = c.clone();
        sorted.sort_unstable();
        prop_assert_eq!(sorted, (0..p.members.len()).collect::<Vec<_>>());
    }
}

#[test]
fn one_dominant_topic_is_split_among_workers() {
    // 90% of the documents are one and the same vector: k-means cannot cut them apart and
    // would hand one worker 1,800 of the 2,000 documents.
    let (n, d) = (2000, 8);
    let mut v = clustered(n, d, 4, 0, 3);
    for i in (0..n).filter(|i| i % 10 < 9) {
        v[i * d..(i + 1) * d].copy_from_slice(&[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }
    let p = partition(&v, d, &vec![true; n], 4, 20, 3, &NoProgress).unwrap();
    let biggest = p.members.iter().map(Vec::len).max().unwrap();
    assert!(biggest <= 1000, "{biggest} of {n} documents in one part");
    assert!(p.members.len() >= 3, "{} parts", p.members.len());
}

#[test]
fn the_chain_walks_centroids_along_their_similarities() {
    // Eight directions on an arc, listed out of order, the ends farthest from the rest:
    // the chain follows the arc from one end.
    let angles = [1.1f32, 0.0, 1.8, 0.6, 1.5, 0.9, 1.3, 2.4];
    let c: Vec<f32> = angles.iter().flat_map(|a| [a.cos(), a.sin()]).collect();
    let mut walk: Vec<f32> = chain(&c, 2).iter().map(|&p| angles[p]).collect();
    if walk[0] > 1.0 {
        walk.reverse();
    }
    assert_eq!(walk, [0.0, 0.6, 0.9, 1.1, 1.3, 1.5, 1.8, 2.4]);
}

fn builtin(ds: &Dataset, params: &OrderParams) -> (Vec<f32>, usize) {
    super::super::document_vectors(ds, params, Input::Builtin, &NoProgress)
        .unwrap()
        .unwrap()
}

#[test]
fn a_single_part_orders_exactly_as_the_local_engine() {
    let dir = tempfile::tempdir().unwrap();
    let ds = topical_dataset(dir.path());
    let params = OrderParams {
        seq_len: 63,
        k: 5,
        ..OrderParams::default()
    };
    let local = order_dataset(&ds, &params, Input::Builtin, json!(null), &NoProgress).unwrap();
    let (v, d) = builtin(&ds, &params);
    let (active, _) = participants(&ds.doc_lengths().unwrap(), Some((&v, d)));
    let p = partition(&v, d, &active, 1, 10, 0, &NoProgress).unwrap();
    let docs = &p.members[0];
    let rows: Vec<f32> = docs
        .iter()
        .flat_map(|&i| v[i as usize * d..][..d].to_vec())
        .collect();
    let part = order_partition(&rows, d, docs, &params, &NoProgress).unwrap();
    let ray = join_parts(
        &ds,
        &params,
        &v,
        d,
        &p.centroids,
        &[part],
        1,
        json!(null),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(ray.order.docs(), local.order.docs());
    assert_eq!(ray.order.context_starts(), local.order.context_starts());
    assert_eq!(ray.duplicates, local.duplicates);
    let mut want = local.report.clone();
    want.seconds = ray.report.seconds.clone();
    assert_eq!(ray.report, want);
    let meta: serde_json::Value = serde_json::from_str(ray.order.meta()).unwrap();
    assert_eq!(
        (meta["engine"].as_str(), meta["partitions"].as_u64()),
        (Some("ray"), Some(1))
    );
    let local_meta: serde_json::Value = serde_json::from_str(local.order.meta()).unwrap();
    assert_eq!(local_meta["engine"], "local");
}

#[test]
fn parts_join_into_one_order_and_bad_parts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ds = topical_dataset(dir.path());
    let params = OrderParams {
        seq_len: 63,
        k: 3,
        ..OrderParams::default()
    };
    let (v, d) = builtin(&ds, &params);
    let (active, _) = participants(&ds.doc_lengths().unwrap(), Some((&v, d)));
    let p = partition(&v, d, &active, 3, 8, 0, &NoProgress).unwrap();
    assert!(p.members.len() >= 2, "{:?}", p.members);
    let parts: Vec<PartOrder> = p
        .members
        .iter()
        .map(|docs| {
            let rows: Vec<f32> = docs
                .iter()
                .flat_map(|&i| v[i as usize * d..][..d].to_vec())
                .collect();
            order_partition(&rows, d, docs, &params, &NoProgress).unwrap()
        })
        .collect();
    let join = |parts: &[PartOrder]| {
        join_parts(
            &ds,
            &params,
            &v,
            d,
            &p.centroids,
            parts,
            3,
            json!(null),
            &NoProgress,
        )
    };
    let out = join(&parts).unwrap();
    let mut all: Vec<u64> = out.order.docs().to_vec();
    all.extend(out.duplicates.iter().map(|x| x.doc as u64));
    all.sort_unstable();
    assert_eq!(all, (0..61).collect::<Vec<u64>>()); // document 61 is empty
    assert_eq!(out.duplicates.len(), 1);
    assert!(
        out.report.ordered_pairs.mean_similarity > 2.0 * out.report.random_pairs.mean_similarity
    );

    let e = join(&parts[1..]).unwrap_err().to_string();
    assert!(e.contains("centroids"), "{e}");
    let mut twice = parts.clone();
    let first = twice[0].path.docs[0];
    twice[1].path.docs.push(first);
    let e = join(&twice).unwrap_err().to_string();
    assert!(e.contains("listed twice"), "{e}");
    let mut lost = parts.clone();
    let gone = lost[0].path.docs.pop().unwrap();
    *lost[0].path.segment_starts.last_mut().unwrap() -= 1;
    let e = join(&lost).unwrap_err().to_string();
    assert!(
        e.contains(&format!("document {gone} is in no part's order")),
        "{e}"
    );
    let e = order_partition(&v[..2 * d], d, &[5, 5], &params, &NoProgress).unwrap_err();
    assert!(e.to_string().contains("strictly ascending"), "{e}");
}
