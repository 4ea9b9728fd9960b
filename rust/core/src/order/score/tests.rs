use proptest::prelude::*;

use super::*;
use crate::plan::Plan;
use crate::progress::NoProgress;

/// Pairs of documents that follow each other among the input tokens of a
/// row of the plan the loader builds from `order` (the second one starting
/// before the row's last, label-only, token): the reference for "adjacent
/// in rows".
fn plan_pairs(ds: &Dataset, order: &Order, seq_len: u64) -> Vec<(u64, u64)> {
    let plan = Plan::ordered(ds, seq_len, order).unwrap();
    let mut segs = Vec::new();
    let mut out = Vec::new();
    for r in 0..plan.num_samples() {
        plan.sample(ds, r, &mut segs).unwrap();
        let mut at = 0;
        for w in segs.windows(2) {
            at += w[0].len;
            if at < seq_len {
                out.push((w[0].doc, w[1].doc));
            }
        }
    }
    out
}

fn cosine(v: &[f32], d: usize, a: u64, b: u64) -> f64 {
    let (x, y) = (&v[a as usize * d..][..d], &v[b as usize * d..][..d]);
    let dot: f64 = x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum();
    let norm = |z: &[f32]| z.iter().map(|&p| p as f64 * p as f64).sum::<f64>().sqrt();
    dot / (norm(x) * norm(y))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Similarities and label agreement are those of the pairs the loader puts
    /// next to each other in a row; the ceiling is the brute-force nearest
    /// neighbour; the baseline is the same documents shuffled.
    #[test]
    fn scores_follow_the_rows_the_loader_builds(
        lens in proptest::collection::vec(0u64..30, 3..25),
        seq_len in 1u64..40,
        flow in any::<bool>(),
        seed in any::<u64>(),
        d in 1usize..5,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let ds = crate::plan::tests::dataset(dir.path(), &lens);
        let n = lens.len() as u64;
        let p = Permutation::new(n, seed);
        let docs: Vec<u64> = (0..n).map(|i| p.get(i)).collect();
        let order = Order::with_meta(&ds, docs.clone(), vec![0, n / 3, n], flow, String::new()).unwrap();
        let v: Vec<f32> = (0..n as usize * d)
            .map(|i| (crate::shuffle::mix64(seed ^ i as u64) % 1000) as f32 / 500.0 - 0.999)
            .collect();
        let labels: Vec<i64> = (0..n).map(|i| (crate::shuffle::mix64(i ^ seed) % 3) as i64 - 1).collect();
        let scorer = Scorer { name: "test", vectors: Some((&v, d)), labels: Some(&labels) };
        let got = score(&ds, &order, seq_len, &scorer, 5, &NoProgress).unwrap();
        let s = got.similarity.unwrap();
        let pairs = plan_pairs(&ds, &order, seq_len);
        prop_assert_eq!(s.pairs, pairs.len() as u64);
        if !pairs.is_empty() {
            let want = pairs.iter().map(|&(a, b)| cosine(&v, d, a, b)).sum::<f64>() / pairs.len() as f64;
            prop_assert!((s.ordered - want).abs() < 1e-5, "{} vs {}", s.ordered, want);
        }
        let nearest = docs.iter().map(|&a| {
            docs.iter().filter(|&&b| b != a).map(|&b| cosine(&v, d, a, b)).fold(f64::MIN, f64::max)
        }).sum::<f64>() / n as f64;
        prop_assert!((s.nearest - nearest).abs() < 1e-4, "{} vs {}", s.nearest, nearest);
        prop_assert!((s.difference - (s.ordered - s.random)).abs() < 1e-12);
        // The baseline: the same documents in the seeded random order, same contexts.
        let q = Permutation::new(n, 5 ^ 0x7261_6e64_6f6d);
        let shuffled: Vec<u64> = (0..n).map(|i| docs[q.get(i) as usize]).collect();
        let base = Order::with_meta(&ds, shuffled, vec![0, n / 3, n], flow, String::new()).unwrap();
        let base_pairs = plan_pairs(&ds, &base, seq_len);
        if !base_pairs.is_empty() {
            let want = base_pairs.iter().map(|&(a, b)| cosine(&v, d, a, b)).sum::<f64>() / base_pairs.len() as f64;
            prop_assert!((s.random - want).abs() < 1e-5);
        }
        let l = got.labels.unwrap();
        let both: Vec<_> = pairs.iter().filter(|&&(a, b)| labels[a as usize] >= 0 && labels[b as usize] >= 0).collect();
        prop_assert_eq!(l.pairs, both.len() as u64);
        if !both.is_empty() {
            let same = both.iter().filter(|&&&(a, b)| labels[a as usize] == labels[b as usize]).count();
            prop_assert!((l.ordered - same as f64 / both.len() as f64).abs() < 1e-12);
        }
    }
}

#[test]
fn related_neighbours_score_near_one_and_random_near_zero() {
    // Two topics of 20 documents each: vectors are the topic's axis plus a
    // little per-document noise; labels are the topics.
    let dir = tempfile::tempdir().unwrap();
    let ds = crate::plan::tests::dataset(dir.path(), &[10; 40]);
    let d = 8;
    let v: Vec<f32> = (0..40 * d)
        .map(|i| {
            let (doc, c) = (i / d, i % d);
            let axis = if c == doc % 2 { 1.0 } else { 0.0 };
            axis + 0.05 * ((crate::shuffle::mix64(i as u64) % 100) as f32 / 100.0)
        })
        .collect();
    let labels: Vec<i64> = (0..40).map(|i| i % 2).collect();
    let scorer = Scorer {
        name: "t",
        vectors: Some((&v, d)),
        labels: Some(&labels),
    };
    // Topic by topic: every row holds one topic except where they meet.
    let grouped: Vec<u64> = (0..40)
        .filter(|i| i % 2 == 0)
        .chain((0..40).filter(|i| i % 2 == 1))
        .collect();
    let order = Order::with_meta(&ds, grouped, vec![0, 40], true, String::new()).unwrap();
    let s = score(&ds, &order, 39, &scorer, 0, &NoProgress).unwrap();
    let (sim, lab) = (s.similarity.unwrap(), s.labels.unwrap());
    assert!(sim.normalised > 0.8, "{sim:?}");
    assert!(
        lab.ordered > 0.9 && (lab.chance - 0.5).abs() < 1e-12,
        "{lab:?}"
    );
    assert!(lab.difference > 0.3, "{lab:?}");
    // Alternating topics: below random.
    let mixed = Order::with_meta(&ds, (0..40).collect(), vec![0, 40], true, String::new()).unwrap();
    let m = score(&ds, &mixed, 39, &scorer, 0, &NoProgress).unwrap();
    assert!(m.similarity.unwrap().normalised < 0.0);
    assert_eq!(m.labels.unwrap().ordered, 0.0);
}

#[test]
fn wrong_row_counts_are_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let ds = crate::plan::tests::dataset(dir.path(), &[5; 6]);
    let order = Order::with_meta(&ds, (0..6).collect(), vec![0, 6], true, String::new()).unwrap();
    let v = vec![1f32; 5 * 4];
    let e = score(
        &ds,
        &order,
        8,
        &Scorer {
            name: "t",
            vectors: Some((&v, 4)),
            labels: None,
        },
        0,
        &NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("5 rows of 4 values but the dataset has 6 documents")
            && e.contains("one row per document"),
        "{e}"
    );
    let l = vec![0i64; 7];
    let e = score(
        &ds,
        &order,
        8,
        &Scorer {
            name: "t",
            vectors: None,
            labels: Some(&l),
        },
        0,
        &NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("7 labels for 6 documents"), "{e}");
    let mut z = vec![1f32; 6 * 4];
    z[8..12].fill(0.0);
    let e = score(
        &ds,
        &order,
        8,
        &Scorer {
            name: "t",
            vectors: Some((&z, 4)),
            labels: None,
        },
        0,
        &NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("document 2"), "{e}");
}
