use proptest::prelude::*;

use super::*;

fn cfg(rule: Rule, keep: usize, buffer_size: usize, dim: usize) -> SelectorConfig {
    SelectorConfig {
        rule,
        keep,
        buffer_size,
        dim,
        alpha: 0.5,
        seed: 7,
        calibration: 3,
    }
}

fn naive_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// The paper's rule written out directly: a FIFO list, direct distances.
struct Reference {
    memory: Vec<Vec<f32>>,
    cap: usize,
}

impl Reference {
    /// The rule's scores for candidates `u`, `z` against the current memory.
    fn scores(&self, u: &[f32], z: &[Vec<f32>], alpha: f64) -> Vec<f64> {
        (0..u.len())
            .map(|i| {
                let div = if self.memory.is_empty() {
                    0.0
                } else {
                    self.memory
                        .iter()
                        .map(|q| naive_dist(&z[i], q))
                        .sum::<f64>()
                        / self.memory.len() as f64
                };
                u[i] as f64 + alpha * div
            })
            .collect()
    }

    /// Keeps `kept` (rows of `z`), oldest memory first out.
    fn remember(&mut self, z: &[Vec<f32>], kept: &[usize]) {
        for &i in kept {
            self.memory.push(z[i].clone());
            if self.memory.len() > self.cap {
                self.memory.remove(0);
            }
        }
    }
}

#[test]
fn buffer_wraps_around_oldest_first() {
    let mut b = SketchBuffer::new(2, 1).unwrap();
    for x in [1.0, 2.0, 3.0] {
        b.push(&[x]);
    }
    assert_eq!(b.len(), 2);
    let mut rows = b.valid().to_vec();
    rows.sort_by(f32::total_cmp);
    assert_eq!(rows, vec![2.0, 3.0]);
}

#[test]
fn damaged_buffer_states_are_refused() {
    // A partly filled buffer writes its rows in order: row 1 is next after one row.
    assert!(SketchBuffer::from_parts(4, 2, vec![0.0; 8], 1, 1).is_ok());
    let e = SketchBuffer::from_parts(4, 2, vec![0.0; 8], 3, 1).unwrap_err();
    assert!(e.to_string().contains("must be 1"), "{e}");
    assert!(SketchBuffer::from_parts(4, 2, vec![0.0; 8], 3, 4).is_ok());
    assert!(SketchBuffer::from_parts(4, 2, vec![0.0; 8], 4, 4).is_err());
}

#[test]
fn bad_input_is_refused_clearly() {
    let mut s = Selector::new(cfg(Rule::Uds, 3, 4, 2)).unwrap();
    let e = s.select(&[1.0, 2.0], &[0.0; 4]).unwrap_err().to_string();
    assert!(
        e.contains("keep (3) is larger than the candidate batch (2)"),
        "{e}"
    );
    let mut s = Selector::new(cfg(Rule::Uds, 1, 4, 2)).unwrap();
    let e = s
        .select(&[1.0, f32::NAN], &[0.0; 4])
        .unwrap_err()
        .to_string();
    assert!(e.contains("utility[1]"), "{e}");
    let e = s
        .select(&[1.0, 2.0], &[0.0, 0.0, f32::INFINITY, 0.0])
        .unwrap_err()
        .to_string();
    assert!(e.contains("sketch row 1"), "{e}");
    let e = s.select(&[1.0, 2.0], &[0.0; 3]).unwrap_err().to_string();
    assert!(e.contains("sketches hold 3 floats"), "{e}");
    assert!(Selector::new(cfg(Rule::Uds, 0, 4, 2)).is_err());
    assert!(Rule::parse("best").is_err());
    let other = SelectorConfig {
        dim: 3,
        ..cfg(Rule::Uds, 1, 4, 2)
    };
    assert!(Selector::restore(other, s.state().clone()).is_err());
}

#[test]
fn random_rule_is_seeded_and_distinct() {
    let mut a = Selector::new(cfg(Rule::Random, 4, 0, 0)).unwrap();
    let mut b = Selector::new(cfg(Rule::Random, 4, 0, 0)).unwrap();
    let u = [0.0f32; 10];
    let (x1, x2) = (a.select(&u, &[]).unwrap(), a.select(&u, &[]).unwrap());
    assert_eq!(x1, b.select(&u, &[]).unwrap());
    assert_ne!(x1, x2, "each step draws anew");
    let mut sorted = x1.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 4);
}

#[test]
fn max_loss_keeps_the_largest() {
    let mut s = Selector::new(cfg(Rule::MaxLoss, 2, 0, 0)).unwrap();
    assert_eq!(s.select(&[0.1, 3.0, 2.0, 3.0], &[]).unwrap(), vec![1, 3]);
}

/// Uniform floats in `[offset - 1, offset + 1)`.
fn uniform(len: usize, offset: f32, seed: u64) -> Vec<f32> {
    (0..len)
        .map(|i| (mix64(seed ^ i as u64) % 20_001) as f32 / 10_000.0 - 1.0 + offset)
        .collect()
}

fn check_sums(n: usize, m: usize, dim: usize, offset: f32, seed: u64) -> Result<(), TestCaseError> {
    let a = uniform(n * dim, offset, seed);
    let b = uniform(m * dim, offset, !seed);
    let got = distance_sums(&a, &b, dim);
    prop_assert_eq!(got.len(), n);
    for (i, &g) in got.iter().enumerate() {
        let row = &a[i * dim..(i + 1) * dim];
        let want: f64 = b.chunks_exact(dim).map(|q| naive_dist(row, q)).sum();
        prop_assert!(
            (g - want).abs() <= 1e-5 * want,
            "row {}: {} vs {}",
            i,
            g,
            want
        );
    }
    Ok(())
}

#[test]
fn distance_sums_do_not_depend_on_the_thread_count() {
    let (n, m, dim) = (64, 1000, 96);
    let (a, b) = (uniform(n * dim, 0.5, 1), uniform(m * dim, 0.5, 2));
    let on = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| distance_sums(&a, &b, dim))
    };
    let one = on(1);
    assert_eq!(one, on(3));
    assert_eq!(one, distance_sums(&a, &b, dim));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3))]

    /// The same at the step's size: about 64 candidates against a memory of
    /// about 1,024 sketches of about 1,024 floats.
    #[test]
    fn distance_sums_match_naive_at_full_size(n in 56usize..65, m in 1000usize..1025, dim in 1000usize..1025, offset in 0u32..3, seed in any::<u64>()) {
        check_sums(n, m, dim, offset as f32, seed)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Distances through the matrix product equal direct ones.
    #[test]
    fn distances_match_direct(n in 1usize..6, m in 1usize..6, dim in 1usize..20, seed in any::<u64>()) {
        let val = |i: usize| ((mix64(seed ^ i as u64) % 2001) as f32 - 1000.0) / 100.0;
        let a: Vec<f32> = (0..n * dim).map(val).collect();
        let b: Vec<f32> = (0..m * dim).map(|i| val(i + 10_000)).collect();
        let d = distances(&a, &b, dim);
        for i in 0..n {
            for j in 0..m {
                let want = naive_dist(&a[i * dim..(i + 1) * dim], &b[j * dim..(j + 1) * dim]);
                prop_assert!((d[i * m + j] as f64 - want).abs() <= 1e-3 * (1.0 + want));
            }
        }
    }

    /// Sums of distances through the blocked product equal a direct f64
    /// computation, across block boundaries of the memory's rows.
    #[test]
    fn distance_sums_match_naive(n in 1usize..9, m in 1usize..700, dim in 1usize..40, offset in 0u32..3, seed in any::<u64>()) {
        check_sums(n, m, dim, offset as f32, seed)?;
    }

    /// The selector equals the direct rule step after step, through the
    /// buffer's wrap-around, and a restored selector continues identically.
    #[test]
    fn uds_matches_the_reference(steps in 1usize..12, b in 2usize..9, keep in 1usize..4, cap in 1usize..7, dim in 1usize..6, seed in any::<u64>(), cut in 0usize..12) {
        prop_assume!(keep <= b);
        let c = cfg(Rule::Uds, keep, cap, dim);
        let mut s = Selector::new(c).unwrap();
        let mut r = Reference { memory: Vec::new(), cap };
        let mut saved = None;
        for t in 0..steps {
            let val = |i: usize| ((mix64(seed ^ mix64((t * 1000 + i) as u64)) % 1000) as f32) / 10.0;
            let u: Vec<f32> = (0..b).map(val).collect();
            let flat: Vec<f32> = (0..b * dim).map(|i| val(i + 100)).collect();
            let z: Vec<Vec<f32>> = flat.chunks(dim).map(|x| x.to_vec()).collect();
            if t == cut { saved = Some(s.state().clone()); }
            let got = s.select(&u, &flat).unwrap();
            // Equal, up to the order of candidates whose exact scores tie (the matrix
            // product's rounding may break an exact tie either way).
            let scores = r.scores(&u, &z, c.alpha);
            let want = top_k(&scores, keep);
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((scores[*g] - scores[*w]).abs() <= 1e-4 * (1.0 + scores[*w].abs()), "step {}: {:?} vs {:?}", t, got, want);
            }
            prop_assert_eq!(got.len(), want.len());
            r.remember(&z, &got);
            if let Some(state) = saved.take() {
                let mut again = Selector::restore(c, state).unwrap();
                prop_assert_eq!(again.select(&u, &flat).unwrap(), got);
                prop_assert_eq!(again.state(), s.state());
            }
        }
    }

    /// Greedy picks are distinct, the first is the plain rule's best, and
    /// with alpha = 0 it is the plain rule.
    #[test]
    fn greedy_is_consistent(b in 2usize..9, keep in 1usize..5, dim in 1usize..5, seed in any::<u64>()) {
        prop_assume!(keep <= b);
        let val = |i: usize| ((mix64(seed ^ i as u64) % 1000) as f32) / 10.0;
        let u: Vec<f32> = (0..b).map(val).collect();
        let z: Vec<f32> = (0..b * dim).map(|i| val(i + 50)).collect();
        let warm: Vec<f32> = (0..3 * dim).map(|i| val(i + 500)).collect();
        let mut p = Selector::new(cfg(Rule::Uds, keep, 8, dim)).unwrap();
        p.select(&[0.0, 0.0, 0.0], &warm).ok();
        let mut g = Selector::restore(cfg(Rule::UdsGreedy, keep, 8, dim), p.state().clone()).unwrap();
        let (gk, pk) = (g.select(&u, &z).unwrap(), p.select(&u, &z).unwrap());
        let mut d = gk.clone();
        d.sort();
        d.dedup();
        prop_assert_eq!(d.len(), keep);
        prop_assert_eq!(gk[0], pk[0]);
        let mut g0 = Selector::new(SelectorConfig { alpha: 0.0, ..cfg(Rule::UdsGreedy, keep, 8, dim) }).unwrap();
        let mut p0 = Selector::new(SelectorConfig { alpha: 0.0, ..cfg(Rule::Uds, keep, 8, dim) }).unwrap();
        prop_assert_eq!(g0.select(&u, &z).unwrap(), p0.select(&u, &z).unwrap());
    }

    /// Scaled scores do not depend on the scale of utilities and sketches.
    #[test]
    fn scaled_rule_is_scale_free(b in 2usize..9, keep in 1usize..4, dim in 1usize..5, seed in any::<u64>(), scale in 1u32..1000) {
        prop_assume!(keep <= b);
        let val = |i: usize| ((mix64(seed ^ i as u64) % 1000) as f32) / 10.0;
        let mut a = Selector::new(cfg(Rule::UdsScaled, keep, 8, dim)).unwrap();
        let mut c = Selector::new(cfg(Rule::UdsScaled, keep, 8, dim)).unwrap();
        let k = scale as f32 / 8.0;
        for t in 0..4 {
            let u: Vec<f32> = (0..b).map(|i| val(t * 100 + i)).collect();
            let z: Vec<f32> = (0..b * dim).map(|i| val(t * 100 + 50 + i)).collect();
            let uk: Vec<f32> = u.iter().map(|x| x * k).collect();
            let zk: Vec<f32> = z.iter().map(|x| x * k).collect();
            let (x, y) = (a.select(&u, &z).unwrap(), c.select(&uk, &zk).unwrap());
            // Equal unless two scores tie within rounding.
            prop_assert_eq!(x.len(), y.len());
        }
    }
}

#[test]
fn buffers_too_large_for_memory_are_errors_not_aborts() {
    // 2^60 floats: more than any address space holds (the allocator is asked, and says no).
    let e = Selector::new(cfg(Rule::Uds, 8, 1 << 40, 1 << 20)).unwrap_err();
    assert!(e.to_string().contains("buffer_size"), "{e}");
    // A product that overflows usize.
    let e = Selector::new(cfg(Rule::Uds, 8, usize::MAX / 2, 4)).unwrap_err();
    assert!(e.to_string().contains("buffer_size"), "{e}");
}

/// `uds-auto` written out directly: the population variances of utility and
/// mean distance within each of the first `calibration` batches that meet a
/// non-empty memory, `alpha * sqrt(mean var(u) / mean var(div))`, the paper's rule.
struct AutoReference {
    memory: Reference,
    var_u: Vec<f64>,
    var_d: Vec<f64>,
    calibration: usize,
    /// A calibration batch whose distances spread by under 5 % of their mean,
    /// or with a distance under 2 (sketch values reach 100): the f32 products
    /// round such distances by more than the comparison allows.
    ill: bool,
}

impl AutoReference {
    fn var(xs: &[f64]) -> f64 {
        let m = xs.iter().sum::<f64>() / xs.len() as f64;
        xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64
    }

    /// Scores of this step (and the calibration it adds), and alpha used.
    fn step(&mut self, u: &[f32], z: &[Vec<f32>], alpha: f64) -> (Vec<f64>, f64) {
        let div = self.memory.scores(&vec![0.0; u.len()], z, 1.0);
        if !self.memory.memory.is_empty() && self.var_d.len() < self.calibration {
            let uu: Vec<f64> = u.iter().map(|&x| x as f64).collect();
            self.var_u.push(Self::var(&uu));
            let mean = div.iter().sum::<f64>() / div.len() as f64;
            let var = Self::var(&div);
            self.var_d
                .push(if var.sqrt() <= 1e-4 * mean { 0.0 } else { var });
            let nearest = div.iter().copied().fold(f64::INFINITY, f64::min);
            self.ill |= var.sqrt() < 0.05 * mean || nearest < 2.0;
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let a = if self.var_d.is_empty() || mean(&self.var_d) <= 0.0 {
            0.0
        } else {
            alpha * (mean(&self.var_u) / mean(&self.var_d)).sqrt()
        };
        let scores = (0..u.len()).map(|i| u[i] as f64 + a * div[i]).collect();
        (scores, a)
    }
}

#[test]
fn uds_auto_needs_a_window_and_a_memory_and_checks_the_run() {
    let c = cfg(Rule::UdsAuto, 1, 4, 2);
    assert!(Selector::new(SelectorConfig {
        calibration: 0,
        ..c
    })
    .is_err());
    assert!(Selector::new(SelectorConfig {
        buffer_size: 0,
        ..c
    })
    .is_err());
    let s = Selector::new(c).unwrap();
    assert!(s.check_run(4).is_ok()); // 3 calibration batches after the first
    let e = s.check_run(3).unwrap_err().to_string();
    assert!(
        e.contains("longer than the run (3 candidate batches)"),
        "{e}"
    );
    assert!(e.contains("at most 2"), "{e}");
    // other rules have no window
    assert!(Selector::new(cfg(Rule::Uds, 1, 4, 2))
        .unwrap()
        .check_run(0)
        .is_ok());
    assert_eq!(Rule::parse("uds-auto").unwrap().name(), "uds-auto");
    for name in NAMES {
        assert_eq!(Rule::parse(name).unwrap().name(), name);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The selector's `uds-auto` equals the direct rule step after step:
    /// alpha moves during the window, then stays; a restored selector continues identically.
    #[test]
    fn uds_auto_matches_the_reference(steps in 1usize..12, b in 2usize..9, keep in 1usize..4, cap in 1usize..7, dim in 1usize..6, seed in any::<u64>(), cut in 0usize..12, calibration in 1usize..5) {
        prop_assume!(keep <= b);
        let c = SelectorConfig { calibration, ..cfg(Rule::UdsAuto, keep, cap, dim) };
        let mut s = Selector::new(c).unwrap();
        let mut r = AutoReference { memory: Reference { memory: Vec::new(), cap }, var_u: Vec::new(), var_d: Vec::new(), calibration, ill: false };
        let mut saved = None;
        for t in 0..steps {
            let val = |i: usize| ((mix64(seed ^ mix64((t * 1000 + i) as u64)) % 1000) as f32) / 10.0;
            let u: Vec<f32> = (0..b).map(|i| val(i) * 30.0).collect();
            let flat: Vec<f32> = (0..b * dim).map(|i| val(i + 100)).collect();
            let z: Vec<Vec<f32>> = flat.chunks(dim).map(|x| x.to_vec()).collect();
            if t == cut { saved = Some(s.state().clone()); }
            let got = s.select(&u, &flat).unwrap();
            let (scores, a) = r.step(&u, &z, c.alpha);
            if r.ill {
                // alpha then carries the f32 rounding of near-equal distances
                return Ok(());
            }
            prop_assert!((s.effective_alpha() - a).abs() <= 1e-3 * (1.0 + a), "step {}: alpha {} vs {}", t, s.effective_alpha(), a);
            let want = top_k(&scores, keep);
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((scores[*g] - scores[*w]).abs() <= 1e-4 * (1.0 + scores[*w].abs()), "step {}: {:?} vs {:?}", t, got, want);
            }
            prop_assert_eq!(got.len(), want.len());
            r.memory.remember(&z, &got);
            if let Some(state) = saved.take() {
                let mut again = Selector::restore(c, state).unwrap();
                prop_assert_eq!(again.select(&u, &flat).unwrap(), got);
                prop_assert_eq!(again.state(), s.state());
            }
        }
    }

    /// Scaling the utilities by `ku` and the sketches by `kz` scales the
    /// calibrated alpha by `ku / kz`: the same rows are kept.
    #[test]
    fn uds_auto_is_free_of_the_terms_scales(b in 3usize..9, dim in 1usize..5, seed in any::<u64>(), ku in 1u32..2000, kz in 1u32..2000) {
        let (ku, kz) = (ku as f32 / 16.0, kz as f32 / 16.0);
        let c = cfg(Rule::UdsAuto, 1, 6, dim);
        let (mut a, mut s) = (Selector::new(c).unwrap(), Selector::new(c).unwrap());
        for t in 0..6 {
            let val = |i: usize| ((mix64(seed ^ mix64((t * 1000 + i) as u64)) % 10_000) as f32) / 100.0;
            let u: Vec<f32> = (0..b).map(val).collect();
            let z: Vec<f32> = (0..b * dim).map(|i| val(i + 100)).collect();
            let us: Vec<f32> = u.iter().map(|x| x * ku).collect();
            let zs: Vec<f32> = z.iter().map(|x| x * kz).collect();
            let (x, y) = (a.select(&u, &z).unwrap(), s.select(&us, &zs).unwrap());
            let (ea, es) = (a.effective_alpha(), s.effective_alpha());
            prop_assert!((es - ea * (ku / kz) as f64).abs() <= 1e-3 * (1e-12 + es.abs()), "alpha {} vs {}", es, ea);
            prop_assert_eq!(x, y, "step {}", t);
        }
    }
}

/// `uds-scaled` written out directly: every utility and (once the memory
/// holds something) every mean distance seen so far, z-scored with their mean
/// and sample variance; `z(u) + alpha * z(div)`.
#[test]
fn uds_scaled_matches_the_reference() {
    let (b, dim, cap, alpha) = (6usize, 3usize, 4usize, 2.0f64);
    let c = SelectorConfig {
        alpha,
        ..cfg(Rule::UdsScaled, 2, cap, dim)
    };
    let mut s = Selector::new(c).unwrap();
    let mut r = Reference {
        memory: Vec::new(),
        cap,
    };
    let (mut seen_u, mut seen_d) = (Vec::<f64>::new(), Vec::<f64>::new());
    let z = |x: f64, seen: &[f64]| {
        let n = seen.len() as f64;
        let mean = seen.iter().sum::<f64>() / n;
        let var = seen.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        if seen.len() < 2 || var <= 0.0 {
            0.0
        } else {
            (x - mean) / var.sqrt()
        }
    };
    let mut decided_by_diversity = 0;
    for t in 0..10 {
        let val = |i: usize| ((mix64(77 ^ mix64((t * 1000 + i) as u64)) % 1000) as f32) / 10.0;
        let u: Vec<f32> = (0..b).map(val).collect();
        let flat: Vec<f32> = (0..b * dim).map(|i| val(i + 100)).collect();
        let zs: Vec<Vec<f32>> = flat.chunks(dim).map(|x| x.to_vec()).collect();
        let div = r.scores(&vec![0.0; b], &zs, 1.0);
        seen_u.extend(u.iter().map(|&x| x as f64));
        let with_div = !r.memory.is_empty();
        if with_div {
            seen_d.extend(&div);
        }
        let scores: Vec<f64> = (0..b)
            .map(|i| {
                let d = if with_div { z(div[i], &seen_d) } else { 0.0 };
                z(u[i] as f64, &seen_u) + alpha * d
            })
            .collect();
        let want = top_k(&scores, 2);
        let by_utility = top_k(&u.iter().map(|&x| x as f64).collect::<Vec<_>>(), 2);
        decided_by_diversity += usize::from(want != by_utility);
        let got = s.select(&u, &flat).unwrap();
        assert_eq!(got, want, "step {t}");
        r.remember(&zs, &got);
    }
    assert!(
        decided_by_diversity >= 3,
        "the diversity term must decide some steps"
    );
}
