//! The sample stream: which (source, sample) comes at each global position,
//! and which positions belong to a rank's and a worker's batches.
//!
//! Sources are interleaved by Megatron's largest-deficit rule (its
//! `build_blending_indices`): position `g` goes to the source whose weight
//! times `max(g, 1)` exceeds its count so far by the most, ties to the lower
//! index (sources of weight 0 are never drawn).
//! Inside a source, samples follow a keyed [`Permutation`] per pass over the
//! source (a source smaller than its share repeats, reshuffled). An epoch is
//! as many positions as all sources have samples together.

use crate::error::{Error, Result};
use crate::shuffle::{key_of, Permutation, Windowed};

/// A position in the sample stream: everything needed to resume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Epoch number.
    pub epoch: u64,
    /// Samples consumed in this epoch, across all ranks.
    pub position: u64,
    /// Samples taken from each source since the start of training.
    pub counts: Vec<u64>,
}

/// Interleaving and shuffling of one or more sources.
#[derive(Clone, Debug)]
pub struct Mixture {
    sizes: Vec<u64>,
    weights: Vec<f64>,
    seed: u64,
    shuffle: bool,
    /// Shuffle window in samples (0: each source shuffled as a whole).
    window: u64,
    epoch_len: u64,
}

impl Mixture {
    /// Version of the interleaving rule, part of the fingerprint of streams of
    /// several sources: a state saved under another rule is refused, not
    /// resumed into a different order. (1: `g + 1`; 2: Megatron's `max(g, 1)`.)
    pub const RULE: u64 = 2;

    /// `sizes[s]` samples in source `s`, drawn with relative `weights[s]`.
    pub fn new(sizes: Vec<u64>, weights: Vec<f64>, seed: u64, shuffle: bool) -> Result<Self> {
        if sizes.is_empty() || sizes.len() != weights.len() {
            return Err(Error::invalid(
                "sources",
                "give at least one source, each with a weight",
            ));
        }
        if let Some(w) = weights.iter().find(|w| !w.is_finite() || **w < 0.0) {
            return Err(Error::invalid(
                "weights",
                format!("{w} is not a finite non-negative weight"),
            ));
        }
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            return Err(Error::invalid(
                "weights",
                "the weights sum to zero; give at least one positive weight",
            ));
        }
        if let Some(s) = (0..sizes.len()).find(|&s| sizes[s] == 0 && weights[s] > 0.0) {
            return Err(Error::invalid(
                "sources",
                format!("source {s} has no samples (empty, or shorter than one sequence) but a positive weight"),
            ));
        }
        let weights: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let epoch_len = sizes
            .iter()
            .zip(&weights)
            .filter(|(_, w)| **w > 0.0)
            .map(|(n, _)| n)
            .sum();
        Ok(Mixture {
            sizes,
            weights,
            seed,
            shuffle,
            window: 0,
            epoch_len,
        })
    }

    /// The same mixture with each source shuffled in windows of `window`
    /// samples ([`Windowed`]; 0: as a whole). A source no larger than a
    /// window is shuffled as a whole.
    pub fn with_window(mut self, window: u64) -> Self {
        self.window = window;
        self
    }

    /// Positions in one epoch.
    pub fn epoch_len(&self) -> u64 {
        self.epoch_len
    }

    /// Whether samples are shuffled.
    pub fn shuffled(&self) -> bool {
        self.shuffle
    }

    /// Number of sources.
    pub fn num_sources(&self) -> usize {
        self.sizes.len()
    }

    /// Checks that `c` is a position this stream can reach: counts for every
    /// source, a position inside the epoch, counts that add up to the
    /// positions before it, and room to go on to the next epoch. Errors name
    /// the field.
    pub fn check_cursor(&self, c: &Cursor) -> Result<()> {
        let n = self.epoch_len;
        if c.counts.len() != self.sizes.len() {
            return Err(Error::invalid(
                "counts",
                format!(
                    "the state has counts for {} sources but this stream has {}",
                    c.counts.len(),
                    self.sizes.len()
                ),
            ));
        }
        if c.position >= n {
            return Err(Error::invalid(
                "position",
                format!(
                    "{} is not inside an epoch of {n} samples (0 to {})",
                    c.position,
                    n - 1
                ),
            ));
        }
        let before = c
            .epoch
            .checked_add(1)
            .and_then(|e| e.checked_mul(n))
            .map(|_| c.epoch * n + c.position)
            .ok_or_else(|| {
                Error::invalid(
                    "epoch",
                    format!(
                        "{} is too large: {} epochs of {n} samples overflow a 64-bit count",
                        c.epoch, c.epoch
                    ),
                )
            })?;
        let total = c
            .counts
            .iter()
            .try_fold(0u64, |a, &x| a.checked_add(x))
            .unwrap_or(u64::MAX);
        if total != before {
            return Err(Error::invalid(
                "counts",
                format!(
                    "{:?} add up to {total}, but epoch {} position {} follows {before} samples",
                    c.counts, c.epoch, c.position
                ),
            ));
        }
        Ok(())
    }

    /// The cursor at the start of `epoch`.
    pub fn start(&self, epoch: u64) -> Cursor {
        let mut c = Cursor {
            epoch: 0,
            position: 0,
            counts: vec![0; self.sizes.len()],
        };
        let total = epoch.saturating_mul(self.epoch_len);
        if self.sizes.len() == 1 {
            c.counts[0] = total;
        } else {
            for _ in 0..total {
                self.pick(&mut c.counts);
            }
        }
        c.epoch = epoch;
        c
    }

    /// Chooses the source of the next position and counts it.
    fn pick(&self, counts: &mut [u64]) -> usize {
        if counts.len() == 1 {
            counts[0] += 1;
            return 0;
        }
        let g = (counts.iter().sum::<u64>() as f64).max(1.0);
        let mut best = 0usize;
        let mut best_deficit = f64::NEG_INFINITY;
        for (s, (&w, &c)) in self.weights.iter().zip(counts.iter()).enumerate() {
            if w <= 0.0 {
                continue;
            }
            let deficit = w * g - c as f64;
            if deficit > best_deficit {
                best = s;
                best_deficit = deficit;
            }
        }
        counts[best] += 1;
        best
    }

    /// Sample id of the `count`-th draw (0-based) from source `s`.
    pub fn sample_of(&self, s: usize, count: u64) -> u64 {
        let n = self.sizes[s];
        let (pass, j) = (count / n, count % n);
        if !self.shuffle {
            return j;
        }
        let key = key_of(&[self.seed, s as u64, pass]);
        if self.window > 0 && self.window < n {
            Windowed::new(n, self.window, key).get(j)
        } else {
            Permutation::new(n, key).get(j)
        }
    }

    /// The (source, sample) at the cursor; advances it by one position
    /// (into the next epoch at the end of one).
    pub fn next(&self, c: &mut Cursor) -> (usize, u64) {
        let s = self.pick(&mut c.counts);
        let id = self.sample_of(s, c.counts[s] - 1);
        c.position += 1;
        if c.position >= self.epoch_len {
            c.epoch += 1;
            c.position = 0;
        }
        (s, id)
    }

    /// Advances the cursor by `n` positions without producing samples.
    pub fn skip(&self, c: &mut Cursor, n: u64) {
        if self.sizes.len() == 1 {
            let total = c.position + n;
            c.counts[0] += n;
            c.epoch += total / self.epoch_len;
            c.position = total % self.epoch_len;
        } else {
            for _ in 0..n {
                self.next(c);
            }
        }
    }
}

/// Which part of the stream this process reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sharding {
    /// This rank, `< world`.
    pub rank: u64,
    /// Number of ranks.
    pub world: u64,
    /// This data-loading worker of the rank, `< num_workers`.
    pub worker: u64,
    /// Data-loading workers per rank.
    pub num_workers: u64,
    /// Samples per rank-local batch.
    pub batch_size: u64,
    /// Drop the final global step when it is not full on every rank.
    pub drop_last: bool,
}

impl Sharding {
    /// Checks the numbers against an epoch of `epoch_len` positions.
    pub fn check(&self, epoch_len: u64) -> Result<()> {
        if self.world == 0 || self.rank >= self.world {
            return Err(Error::invalid(
                "rank",
                format!("rank {} is not below world size {}", self.rank, self.world),
            ));
        }
        if self.num_workers == 0 || self.worker >= self.num_workers {
            return Err(Error::invalid(
                "worker",
                format!(
                    "worker {} is not below {} workers",
                    self.worker, self.num_workers
                ),
            ));
        }
        if self.batch_size == 0 {
            return Err(Error::invalid("batch_size", "must be at least 1"));
        }
        if epoch_len == 0 {
            return Err(Error::invalid(
                "dataset",
                "there are no samples: the dataset is empty or shorter than one sequence",
            ));
        }
        let step = self.batch_size * self.world;
        if self.drop_last && epoch_len < step {
            return Err(Error::invalid(
                "batch_size",
                format!(
                    "one step needs {step} samples (batch_size {} x world size {}) but an epoch has {epoch_len}; lower batch_size, or pass drop_last=False",
                    self.batch_size, self.world
                ),
            ));
        }
        if !self.drop_last && epoch_len < self.world {
            return Err(Error::invalid(
                "world_size",
                format!(
                    "{} ranks but only {epoch_len} samples in an epoch: some ranks would get none",
                    self.world
                ),
            ));
        }
        Ok(())
    }

    /// Samples per global step.
    pub fn step(&self) -> u64 {
        self.batch_size * self.world
    }

    /// Rank-local batches left in the epoch from `position` (for every rank
    /// when `drop_last`; with a short last step, ranks past its end get one fewer).
    pub fn steps_left(&self, epoch_len: u64, position: u64) -> u64 {
        let left = epoch_len.saturating_sub(position);
        if self.drop_last {
            left / self.step()
        } else {
            let full = left / self.step();
            let rest = left % self.step();
            full + u64::from(rest > self.rank * self.batch_size)
        }
    }

    /// The batches this worker produces: rank-local batch indices `k` with
    /// `k % num_workers == worker`, of `steps` in total.
    pub fn worker_batches(&self, steps: u64) -> u64 {
        steps.saturating_sub(self.worker).div_ceil(self.num_workers)
    }

    /// Positions `[a, b)` (relative to the epoch start position `p0`) of rank-local batch `k`.
    pub fn batch_range(&self, epoch_len: u64, p0: u64, k: u64) -> (u64, u64) {
        let a = p0 + k * self.step() + self.rank * self.batch_size;
        let b = (a + self.batch_size).min(epoch_len);
        (a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn deficit_rule_tracks_weights() {
        let m = Mixture::new(vec![1000, 1000, 1000], vec![0.5, 0.3, 0.2], 1, true).unwrap();
        let mut c = m.start(0);
        let mut seen = [0u64; 3];
        for g in 1..=1000u64 {
            let (s, _) = m.next(&mut c);
            seen[s] += 1;
            for (k, w) in [0.5, 0.3, 0.2].iter().enumerate() {
                assert!((seen[k] as f64 - w * g as f64).abs() <= 1.0 + 1e-9);
            }
        }
    }

    /// Megatron-LM's `build_blending_indices` (megatron/core/datasets/helpers.cpp),
    /// transcribed: the source of each of the first `size` samples.
    fn megatron_blending(weights: &[f64], size: usize) -> Vec<usize> {
        let mut current = vec![0i64; weights.len()];
        let mut out = Vec::with_capacity(size);
        for sample_idx in 0..size {
            let x = (sample_idx as f64).max(1.0);
            let mut max_error_index = 0;
            let mut max_error = weights[0] * x - current[0] as f64;
            for (d, w) in weights.iter().enumerate().skip(1) {
                let error = w * x - current[d] as f64;
                if error > max_error {
                    max_error = error;
                    max_error_index = d;
                }
            }
            out.push(max_error_index);
            current[max_error_index] += 1;
        }
        out
    }

    #[test]
    fn cursor_checks_name_the_field() {
        let m = Mixture::new(vec![10, 5], vec![2.0, 1.0], 0, true).unwrap();
        let mut c = m.start(3);
        m.skip(&mut c, 4);
        assert!(m.check_cursor(&c).is_ok());
        let bad = |f: &dyn Fn(&mut Cursor)| {
            let mut x = c.clone();
            f(&mut x);
            m.check_cursor(&x).unwrap_err().to_string()
        };
        assert!(bad(&|x| x.position = 15).contains("invalid position"));
        assert!(bad(&|x| x.counts.push(0)).contains("invalid counts"));
        assert!(bad(&|x| x.counts[0] += 1).contains("invalid counts"));
        assert!(bad(&|x| x.epoch = u64::MAX).contains("invalid epoch"));
        assert!(bad(&|x| x.epoch = u64::MAX / 15).contains("invalid epoch"));
    }

    #[test]
    fn bad_weights_are_rejected() {
        assert!(Mixture::new(vec![5, 5], vec![-1.0, 2.0], 0, true).is_err());
        assert!(Mixture::new(vec![5, 5], vec![0.0, 0.0], 0, true).is_err());
        assert!(Mixture::new(vec![5, 0], vec![1.0, 1.0], 0, true).is_err());
        assert!(Mixture::new(vec![5, 0], vec![1.0, 0.0], 0, true).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// One source: every sample exactly once per epoch, in a new order each epoch.
        #[test]
        fn single_source_epoch_is_a_permutation(n in 1u64..500, seed in any::<u64>()) {
            let m = Mixture::new(vec![n], vec![1.0], seed, true).unwrap();
            let mut c = m.start(0);
            let mut e0: Vec<u64> = (0..n).map(|_| m.next(&mut c).1).collect();
            prop_assert_eq!(c.epoch, 1);
            let e1: Vec<u64> = (0..n).map(|_| m.next(&mut c).1).collect();
            let mut sorted = e1.clone();
            sorted.sort();
            prop_assert_eq!(sorted, (0..n).collect::<Vec<_>>());
            if n > 5 { prop_assert_ne!(&e0, &e1); }
            e0.sort();
            prop_assert_eq!(e0, (0..n).collect::<Vec<_>>());
        }

        /// Sources follow Megatron's blending order, ties included (equal and
        /// rational weights make many).
        #[test]
        fn sources_follow_megatron_blending(raw in proptest::collection::vec(1u32..6, 2..5), seed in any::<u64>()) {
            let weights: Vec<f64> = raw.iter().map(|&w| f64::from(w)).collect();
            let total: f64 = weights.iter().sum();
            let normalised: Vec<f64> = weights.iter().map(|w| w / total).collect();
            let m = Mixture::new(vec![1000; weights.len()], weights, seed, true).unwrap();
            let mut c = m.start(0);
            let ours: Vec<usize> = (0..300).map(|_| m.next(&mut c).0).collect();
            prop_assert_eq!(ours, megatron_blending(&normalised, 300));
        }

        /// Skipping equals stepping, and starting at an epoch equals walking to it.
        #[test]
        fn skip_and_start_agree_with_next(sizes in proptest::collection::vec(1u64..30, 1..4), skip in 0u64..200, seed in any::<u64>()) {
            let weights: Vec<f64> = sizes.iter().map(|&n| n as f64 + 0.5).collect();
            let m = Mixture::new(sizes, weights, seed, true).unwrap();
            let mut a = m.start(0);
            let mut b = m.start(0);
            for _ in 0..skip { m.next(&mut a); }
            m.skip(&mut b, skip);
            prop_assert_eq!(&a, &b);
            let mut walk = m.start(0);
            m.skip(&mut walk, 2 * m.epoch_len());
            prop_assert_eq!(walk, m.start(2));
        }

        /// Across ranks and workers each position of an epoch is read exactly once.
        #[test]
        fn ranks_and_workers_partition_the_epoch(n in 1u64..300, world in 1u64..5, workers in 1u64..4, b in 1u64..6, drop_last in any::<bool>(), p0 in 0u64..50) {
            let p0 = p0.min(n - 1) / (b * world) * (b * world);
            let mut hits = vec![0u32; n as usize];
            for rank in 0..world {
                for worker in 0..workers {
                    let sh = Sharding { rank, world, worker, num_workers: workers, batch_size: b, drop_last };
                    if sh.check(n).is_err() { return Ok(()); }
                    let steps = sh.steps_left(n, p0);
                    let mine = sh.worker_batches(steps);
                    for m in 0..mine {
                        let k = worker + m * workers;
                        let (a, e) = sh.batch_range(n, p0, k);
                        prop_assert!(a < e, "empty batch");
                        for p in a..e { hits[p as usize] += 1; }
                    }
                }
            }
            let step = b * world;
            let covered_end = if drop_last { p0 + (n - p0) / step * step } else { n };
            for p in 0..n {
                let want = u32::from(p >= p0 && p < covered_end);
                prop_assert_eq!(hits[p as usize], want, "position {}", p);
            }
        }
    }
}
