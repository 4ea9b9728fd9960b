use proptest::prelude::*;

use super::*;
use crate::progress::NoProgress;
use crate::shuffle::mix64;

/// A uniform draw in [-1, 1) from (seed, i).
fn unit(seed: u64, i: u64) -> f32 {
    (mix64(seed ^ mix64(i)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

fn normalised(mut v: Vec<f32>, d: usize) -> Vec<f32> {
    for row in v.chunks_exact_mut(d) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// `n` unit rows scattered around `clusters` random centres, each cluster
/// spread along a few directions of its own.
fn clustered(n: usize, d: usize, clusters: usize, seed: u64) -> Vec<f32> {
    let centre = |c: usize, j: usize| unit(seed ^ 0xc, (c * d + j) as u64);
    let mut v = Vec::with_capacity(n * d);
    for i in 0..n {
        let c = mix64(seed ^ i as u64) as usize % clusters;
        let w: Vec<f32> = (0..4)
            .map(|t| unit(seed ^ 0xa, (i * 4 + t) as u64))
            .collect();
        for j in 0..d {
            let along: f32 = (0..4)
                .map(|t| w[t] * unit(seed ^ 0xb, ((c * 4 + t) * d + j) as u64))
                .sum();
            v.push(centre(c, j) + 0.4 * along + 0.05 * unit(seed ^ 0xd, (i * d + j) as u64));
        }
    }
    normalised(v, d)
}

fn random_rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let v = (0..n * d).map(|i| unit(seed, i as u64)).collect();
    normalised(v, d)
}

fn dot64(emb: &[f32], d: usize, i: usize, j: usize) -> f64 {
    (0..d)
        .map(|t| emb[i * d + t] as f64 * emb[j * d + t] as f64)
        .sum()
}

/// Brute-force best `k` similarities of row `i`, in f64.
fn reference(emb: &[f32], n: usize, d: usize, k: usize, i: usize) -> Vec<f64> {
    let mut s: Vec<f64> = (0..n)
        .filter(|&j| j != i)
        .map(|j| dot64(emb, d, i, j))
        .collect();
    s.sort_by(|a, b| b.total_cmp(a));
    s.truncate(k);
    s
}

/// Structural checks every graph must pass: `k` distinct valid ids per row,
/// never the row itself, similarities that are the rows' inner products,
/// sorted descending with ties by smaller id.
fn check_graph(g: &KnnGraph, emb: &[f32], n: usize, d: usize, k: usize) -> Result<(), String> {
    for i in 0..n {
        let (ids, sims) = (g.neighbors(i), g.sims(i));
        if ids.len() != k || sims.len() != k {
            return Err(format!("row {i} has {} neighbours", ids.len()));
        }
        for (r, (&j, &s)) in ids.iter().zip(sims).enumerate() {
            let j = j as usize;
            if j >= n || j == i || ids[..r].contains(&(j as u32)) {
                return Err(format!("row {i} lists {j}"));
            }
            if (s as f64 - dot64(emb, d, i, j)).abs() > 1e-5 {
                return Err(format!("row {i}: similarity {s} to {j} is wrong"));
            }
            if r > 0 && (sims[r - 1] < s || (sims[r - 1] == s && ids[r - 1] > j as u32)) {
                return Err(format!("row {i} is not sorted at rank {r}"));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn exact_matches_brute_force(n in 2usize..160, d in 1usize..12, k in 1usize..12,
                                 seed in any::<u64>()) {
        let k = k.min(n - 1);
        let emb = random_rows(n, d, seed);
        let g = exact(&emb, n, d, k, &NoProgress).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_graph(&g, &emb, n, d, k).map_err(TestCaseError::fail)?;
        for i in 0..n {
            for (got, want) in g.sims(i).iter().zip(reference(&emb, n, d, k, i)) {
                prop_assert!((*got as f64 - want).abs() < 1e-5, "row {} found {} for {}", i, got, want);
            }
        }
    }

    #[test]
    fn approximate_graphs_are_well_formed(n in 20usize..400, d in 1usize..10, k in 1usize..8,
                                          nlist in 1usize..24, nprobe in 1usize..4,
                                          seed in any::<u64>()) {
        let (k, nlist) = (k.min(n - 1), nlist.min(n));
        let emb = clustered(n, d, 5, seed);
        let params = IvfParams {
            nlist: Some(nlist),
            nprobe: Some(nprobe),
            train_size: Some(n),
            iterations: 3,
            seed,
            exact_below: 0,
        };
        let g = approximate(&emb, n, d, k, &params, &NoProgress)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_graph(&g, &emb, n, d, k).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn exact_breaks_ties_by_smaller_id_across_blocks() {
    // 1,300 rows (three blocks) repeating four distinct vectors.
    let (n, d, k) = (1300, 8, 6);
    let base = random_rows(4, d, 3);
    let emb: Vec<f32> = (0..n)
        .flat_map(|i| base[(i % 4) * d..(i % 4 + 1) * d].to_vec())
        .collect();
    let g = exact(&emb, n, d, k, &NoProgress).unwrap_or_else(|e| unreachable!("{e}"));
    for i in [0, 1, 513, 1299] {
        let twins: Vec<u32> = (0..n as u32)
            .filter(|&j| j as usize % 4 == i % 4 && j as usize != i)
            .take(k)
            .collect();
        assert_eq!(g.neighbors(i), &twins[..], "row {i}");
    }
}

#[test]
fn approximate_recall_on_clustered_data_at_defaults() {
    let (n, d, k) = (6000, 32, 10);
    let emb = clustered(n, d, 40, 11);
    let params = IvfParams {
        exact_below: 0,
        ..IvfParams::default()
    };
    let approx =
        approximate(&emb, n, d, k, &params, &NoProgress).unwrap_or_else(|e| unreachable!("{e}"));
    let truth = exact(&emb, n, d, k, &NoProgress).unwrap_or_else(|e| unreachable!("{e}"));
    check_graph(&approx, &emb, n, d, k).unwrap_or_else(|e| unreachable!("{e}"));
    let r = recall(&approx, &truth).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(r >= 0.9, "recall@10 {r}");
}

#[test]
fn results_do_not_depend_on_the_number_of_threads() {
    let (n, d, k) = (3000, 16, 5);
    let emb = clustered(n, d, 12, 5);
    let params = IvfParams {
        exact_below: 0,
        nprobe: Some(3),
        ..IvfParams::default()
    };
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap_or_else(|e| unreachable!("{e}"));
        pool.install(|| {
            (
                exact(&emb, n, d, k, &NoProgress).unwrap_or_else(|e| unreachable!("{e}")),
                approximate(&emb, n, d, k, &params, &NoProgress)
                    .unwrap_or_else(|e| unreachable!("{e}")),
            )
        })
    };
    let (one, two) = (run(1), run(2));
    assert_eq!(one, two);
    let other_seed = IvfParams { seed: 1, ..params };
    let reseeded = approximate(&emb, n, d, k, &other_seed, &NoProgress)
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(reseeded.n(), n);
}

#[test]
fn small_inputs_fall_back_to_exact() {
    let (n, d, k) = (500, 8, 4);
    let emb = clustered(n, d, 3, 2);
    let params = IvfParams {
        nprobe: Some(1),
        ..IvfParams::default()
    };
    let a =
        approximate(&emb, n, d, k, &params, &NoProgress).unwrap_or_else(|e| unreachable!("{e}"));
    let e = exact(&emb, n, d, k, &NoProgress).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(a, e);
}

fn message(r: Result<KnnGraph>) -> String {
    match r {
        Ok(_) => String::from("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_inputs_are_named() {
    let (n, d) = (10, 4);
    let mut emb = random_rows(n, d, 1);
    assert!(message(exact(&emb[..39], n, d, 3, &NoProgress))
        .contains("39 values do not form n × d = 10 × 4"));
    assert!(message(exact(&emb, n, 0, 3, &NoProgress)).contains("dimension d is 0"));
    assert!(message(exact(&emb, n, d, 10, &NoProgress)).contains("k = 10 with n = 10"));
    assert!(message(exact(&emb, n, d, 0, &NoProgress)).contains("k = 0"));
    emb[7 * d + 2] = f32::NAN;
    assert!(message(exact(&emb, n, d, 3, &NoProgress)).contains("row 7 holds NaN or infinity"));
    emb[7 * d + 2] = f32::INFINITY;
    assert!(message(exact(&emb, n, d, 3, &NoProgress)).contains("row 7 holds NaN or infinity"));
    emb[7 * d + 2] = 0.5;
    emb[3 * d..4 * d].fill(0.0);
    let p = IvfParams {
        exact_below: 0,
        ..IvfParams::default()
    };
    assert!(message(approximate(&emb, n, d, 3, &p, &NoProgress)).contains("row 3 is all zeros"));
}

#[test]
fn bad_settings_are_explained() {
    let (n, d) = (50, 4);
    let emb = random_rows(n, d, 1);
    let with = |p: IvfParams| {
        message(approximate(
            &emb,
            n,
            d,
            3,
            &IvfParams {
                exact_below: 0,
                ..p
            },
            &NoProgress,
        ))
    };
    let base = IvfParams::default();
    assert!(with(IvfParams {
        nlist: Some(51),
        ..base
    })
    .contains("invalid nlist: 51 lists for 50 rows"));
    assert!(with(IvfParams {
        nlist: Some(0),
        ..base
    })
    .contains("invalid nlist"));
    assert!(with(IvfParams {
        nprobe: Some(0),
        ..base
    })
    .contains("invalid nprobe"));
    assert!(with(IvfParams {
        nlist: Some(10),
        train_size: Some(5),
        ..base
    })
    .contains("invalid train_size"));
}

#[test]
fn cancellation_stops_both_searches() {
    let (n, d) = (300, 4);
    let emb = random_rows(n, d, 1);
    let p = IvfParams {
        exact_below: 0,
        ..IvfParams::default()
    };
    assert!(matches!(
        exact(&emb, n, d, 3, &crate::progress::AlwaysCancelled),
        Err(Error::Cancelled)
    ));
    assert!(matches!(
        approximate(&emb, n, d, 3, &p, &crate::progress::AlwaysCancelled),
        Err(Error::Cancelled)
    ));
}

#[test]
fn recall_counts_shared_neighbours() {
    let (n, d, k) = (40, 6, 3);
    let emb = random_rows(n, d, 9);
    let g = exact(&emb, n, d, k, &NoProgress).unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(recall(&g, &g).ok(), Some(1.0));
    let mut worse = g.clone();
    worse.neighbors[0] = 0; // row 0's best replaced by a row that is not a neighbour
    let r = recall(&worse, &g).unwrap_or_else(|e| unreachable!("{e}"));
    assert!((r - (1.0 - 1.0 / (n * k) as f64)).abs() < 1e-12, "{r}");
    let other =
        exact(&emb[..30 * d], 30, d, k, &NoProgress).unwrap_or_else(|e| unreachable!("{e}"));
    assert!(recall(&other, &g).is_err());
}
