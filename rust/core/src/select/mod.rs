//! Online batch selection: from each candidate batch keep the samples with
//! the best score. The trainer computes per-sample utilities (e.g. the
//! nuclear norm of the logits) and sketches on its device; this module owns
//! the memory of recently kept sketches, the scoring rules and the top-k.
//!
//! Rules (UDS: Zou et al. 2025, arXiv 2510.16882):
//! - `uds`: `utility + alpha * mean distance to the buffer` (0 while the
//!   buffer is empty), the paper's rule;
//! - `uds-scaled`: the same with utility and distance z-scored by running
//!   statistics over all candidates seen, so `alpha` is free of the logits'
//!   scale;
//! - `uds-greedy`: picks one at a time, the distance counting the samples
//!   already kept from this batch as part of the memory, so kept samples
//!   also differ from each other;
//! - `uds-auto`: the paper's rule with the diversity weight calibrated from
//!   the two terms' own spread: over the first `calibration` batches that meet
//!   a non-empty memory, the mean within-batch variances of utility and
//!   distance give `alpha_eff = alpha * sd(utility) / sd(distance)`, fixed from
//!   then on (`alpha` is then a ratio of spreads, free of the vocabulary, the
//!   length and the logits' scale);
//! - `random`: a seeded uniform draw without replacement;
//! - `max-loss`: the largest utilities (pass per-sample losses).
//!
//! Kept samples are returned best first; their sketches enter the buffer in
//! that order.

mod buffer;
mod distance;
#[cfg(test)]
mod tests;

pub use buffer::SketchBuffer;
pub use distance::{distance_sums, distances};

use distance::{sq_norms, sums_with_norms, Scratch};

use crate::error::{Error, Result};
use crate::shuffle::mix64;

/// A selection rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Utility plus alpha times the mean distance to the buffer.
    Uds,
    /// [`Rule::Uds`] on running z-scores.
    UdsScaled,
    /// [`Rule::Uds`], greedily, counting this batch's kept samples as memory.
    UdsGreedy,
    /// [`Rule::Uds`] with alpha calibrated from the terms' spreads.
    UdsAuto,
    /// Uniform without replacement.
    Random,
    /// Largest utility (per-sample loss).
    MaxLoss,
}

impl Rule {
    /// The rule named `name`.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "uds" => Rule::Uds,
            "uds-scaled" => Rule::UdsScaled,
            "uds-greedy" => Rule::UdsGreedy,
            "uds-auto" => Rule::UdsAuto,
            "random" => Rule::Random,
            "max-loss" => Rule::MaxLoss,
            other => {
                return Err(Error::invalid(
                    "rule",
                    format!("unknown rule {other:?}; use one of {}", NAMES.join(", ")),
                ))
            }
        })
    }

    /// The rule's name.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Uds => "uds",
            Rule::UdsScaled => "uds-scaled",
            Rule::UdsGreedy => "uds-greedy",
            Rule::UdsAuto => "uds-auto",
            Rule::Random => "random",
            Rule::MaxLoss => "max-loss",
        }
    }

    /// Whether the rule reads sketches.
    pub fn uses_sketches(self) -> bool {
        matches!(
            self,
            Rule::Uds | Rule::UdsScaled | Rule::UdsGreedy | Rule::UdsAuto
        )
    }

    /// The rule's default diversity weight: the reference's `2.5e-3` where
    /// alpha multiplies raw distances, `1` where it weighs standardised terms.
    pub fn default_alpha(self) -> f64 {
        match self {
            Rule::Uds | Rule::UdsGreedy => 2.5e-3,
            Rule::UdsScaled | Rule::UdsAuto => 1.0,
            Rule::Random | Rule::MaxLoss => 0.0,
        }
    }
}

/// The names [`Rule::parse`] accepts.
pub const NAMES: [&str; 6] = [
    "uds",
    "uds-scaled",
    "uds-greedy",
    "uds-auto",
    "random",
    "max-loss",
];

/// Candidate batches with a non-empty memory over which `uds-auto` measures
/// the spreads of its two terms.
pub const DEFAULT_CALIBRATION: usize = 8;

/// What a selector is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SelectorConfig {
    /// The rule.
    pub rule: Rule,
    /// Samples kept per candidate batch.
    pub keep: usize,
    /// Rows of the sketch memory.
    pub buffer_size: usize,
    /// Floats per sketch.
    pub dim: usize,
    /// Weight of the diversity term.
    pub alpha: f64,
    /// Seed of the random rule.
    pub seed: u64,
    /// Batches `uds-auto` calibrates alpha over (see [`DEFAULT_CALIBRATION`]).
    pub calibration: usize,
}

/// Running mean and variance (Welford).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Running {
    /// Values seen.
    pub n: u64,
    /// Their mean.
    pub mean: f64,
    /// Sum of squared deviations.
    pub m2: f64,
}

impl Running {
    fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    fn z(&self, x: f64) -> f64 {
        let var = if self.n > 1 {
            self.m2 / (self.n - 1) as f64
        } else {
            0.0
        };
        if var > 0.0 {
            (x - self.mean) / var.sqrt()
        } else {
            0.0
        }
    }
}

/// Everything a selector carries from step to step (for checkpoints).
#[derive(Clone, Debug, PartialEq)]
pub struct SelectorState {
    /// The memory.
    pub buffer: SketchBuffer,
    /// Running statistics of utility and distance: of all candidates
    /// (`uds-scaled`), or of each calibration batch's variances (`uds-auto`).
    pub stats: [Running; 2],
    /// Selection steps taken (the random rule's counter).
    pub steps: u64,
}

/// An online selector.
#[derive(Clone, Debug)]
pub struct Selector {
    cfg: SelectorConfig,
    state: SelectorState,
    scratch: Scratch,
}

impl Selector {
    /// A selector with an empty memory.
    pub fn new(cfg: SelectorConfig) -> Result<Self> {
        if cfg.keep == 0 {
            return Err(Error::invalid("keep", "keep must be at least 1"));
        }
        if !cfg.alpha.is_finite() {
            return Err(Error::invalid("alpha", "alpha must be a finite number"));
        }
        if cfg.rule == Rule::UdsAuto && (cfg.calibration == 0 || cfg.buffer_size == 0) {
            return Err(Error::invalid(
                "calibration",
                "rule uds-auto needs a calibration window of at least one batch and a memory (buffer_size) of at least one row",
            ));
        }
        if cfg.rule.uses_sketches() && cfg.dim == 0 {
            return Err(Error::invalid(
                "dim",
                format!(
                    "rule {} needs sketches of at least one float",
                    cfg.rule.name()
                ),
            ));
        }
        Ok(Selector {
            state: SelectorState {
                buffer: SketchBuffer::new(cfg.buffer_size, cfg.dim)?,
                stats: [Running::default(); 2],
                steps: 0,
            },
            cfg,
            scratch: Scratch::default(),
        })
    }

    /// A selector continuing from `state`.
    pub fn restore(cfg: SelectorConfig, state: SelectorState) -> Result<Self> {
        let mut s = Selector::new(cfg)?;
        let (rows, next, count) = state.buffer.parts();
        s.state.buffer =
            SketchBuffer::from_parts(cfg.buffer_size, cfg.dim, rows.to_vec(), next, count)?;
        s.state.stats = state.stats;
        s.state.steps = state.steps;
        Ok(s)
    }

    /// The configuration.
    pub fn config(&self) -> &SelectorConfig {
        &self.cfg
    }

    /// The state to checkpoint.
    pub fn state(&self) -> &SelectorState {
        &self.state
    }

    /// The diversity weight in use: `alpha`, or for `uds-auto`
    /// `alpha * sd(utility) / sd(distance)` from the calibration batches seen
    /// so far (0 before the first, and while the distances have not spread;
    /// fixed once the window is complete).
    pub fn effective_alpha(&self) -> f64 {
        if self.cfg.rule != Rule::UdsAuto {
            return self.cfg.alpha;
        }
        let [u, d] = self.state.stats;
        if d.n == 0 || d.mean <= 0.0 {
            return 0.0;
        }
        self.cfg.alpha * (u.mean / d.mean).sqrt()
    }

    /// Checks that a run of `batches` candidate batches completes the
    /// calibration window of `uds-auto` (the first batch meets an empty memory
    /// and does not count).
    pub fn check_run(&self, batches: u64) -> Result<()> {
        let need = self.cfg.calibration as u64 + 1;
        if self.cfg.rule == Rule::UdsAuto && batches < need {
            return Err(Error::invalid(
                "calibration",
                format!(
                    "the calibration window of rule uds-auto ({} batches after the first) is longer than the run ({batches} candidate batches); lower calibration to at most {}",
                    self.cfg.calibration,
                    batches.saturating_sub(1)
                ),
            ));
        }
        Ok(())
    }

    /// Chooses `keep` of the `utility.len()` candidates, best first, and
    /// remembers their sketches. `sketches` is `[B, dim]` row-major (may be
    /// empty for rules without sketches).
    pub fn select(&mut self, utility: &[f32], sketches: &[f32]) -> Result<Vec<usize>> {
        let b = utility.len();
        let (keep, dim) = (self.cfg.keep, self.cfg.dim);
        if keep > b {
            return Err(Error::invalid(
                "keep",
                format!("keep ({keep}) is larger than the candidate batch ({b}); offer more candidates or keep fewer"),
            ));
        }
        if let Some(i) = utility.iter().position(|u| !u.is_finite()) {
            return Err(Error::invalid(
                "utility",
                format!("utility[{i}] is {}; the logits hold NaN or infinity (check the model's numerics)", utility[i]),
            ));
        }
        let uses = self.cfg.rule.uses_sketches();
        if uses || !sketches.is_empty() {
            if sketches.len() != b * dim {
                return Err(Error::invalid(
                    "sketches",
                    format!(
                        "sketches hold {} floats but {b} candidates of {dim} floats need {}",
                        sketches.len(),
                        b * dim
                    ),
                ));
            }
            if let Some(i) = first_non_finite(sketches) {
                return Err(Error::invalid(
                    "sketches",
                    format!(
                        "sketch row {} holds {}; the logits hold NaN or infinity",
                        i / dim.max(1),
                        sketches[i]
                    ),
                ));
            }
        }
        let kept = match self.cfg.rule {
            Rule::Uds | Rule::UdsScaled => {
                let div = self.mean_distances(sketches);
                let scores: Vec<f64> = if self.cfg.rule == Rule::Uds {
                    (0..b)
                        .map(|i| utility[i] as f64 + self.cfg.alpha * div[i])
                        .collect()
                } else {
                    self.scaled_scores(utility, &div)
                };
                top_k(&scores, keep)
            }
            Rule::UdsAuto => {
                let div = self.mean_distances(sketches);
                self.calibrate(utility, &div);
                let alpha = self.effective_alpha();
                let scores: Vec<f64> = (0..b).map(|i| utility[i] as f64 + alpha * div[i]).collect();
                top_k(&scores, keep)
            }
            Rule::UdsGreedy => self.greedy(utility, sketches),
            Rule::Random => self.random(b),
            Rule::MaxLoss => {
                let scores: Vec<f64> = utility.iter().map(|&u| u as f64).collect();
                top_k(&scores, keep)
            }
        };
        if sketches.len() == b * dim && dim > 0 {
            for &i in &kept {
                self.state.buffer.push(&sketches[i * dim..(i + 1) * dim]);
            }
        }
        self.state.steps += 1;
        Ok(kept)
    }

    /// Mean distance of each candidate to the memory (0 when it is empty).
    fn mean_distances(&mut self, sketches: &[f32]) -> Vec<f64> {
        let n = self.state.buffer.len().max(1) as f64;
        let mut sums = self.buffer_sums(sketches);
        sums.iter_mut().for_each(|s| *s /= n);
        sums
    }

    /// Sum of the distances of each candidate to the memory's rows.
    fn buffer_sums(&mut self, sketches: &[f32]) -> Vec<f64> {
        let dim = self.cfg.dim;
        let buf = &self.state.buffer;
        let mut sums = Vec::new();
        if buf.is_empty() {
            sums.resize(sketches.len() / dim, 0.0);
        } else {
            sums_with_norms(
                (sketches, &sq_norms(sketches, dim)),
                (buf.valid(), buf.valid_norms()),
                dim,
                &mut self.scratch,
                &mut sums,
            );
        }
        sums
    }

    fn scaled_scores(&mut self, utility: &[f32], div: &[f64]) -> Vec<f64> {
        let with_div = !self.state.buffer.is_empty();
        for (i, &u) in utility.iter().enumerate() {
            self.state.stats[0].add(u as f64);
            if with_div {
                self.state.stats[1].add(div[i]);
            }
        }
        let [su, sd] = self.state.stats;
        (0..utility.len())
            .map(|i| {
                let d = if with_div { sd.z(div[i]) } else { 0.0 };
                su.z(utility[i] as f64) + self.cfg.alpha * d
            })
            .collect()
    }

    /// Adds this batch's within-batch variances of utility and distance to
    /// the calibration of `uds-auto` while its window is open.
    fn calibrate(&mut self, utility: &[f32], div: &[f64]) {
        let open = (self.state.stats[1].n as usize) < self.cfg.calibration;
        if self.state.buffer.is_empty() || !open {
            return;
        }
        let u: Vec<f64> = utility.iter().map(|&x| x as f64).collect();
        self.state.stats[0].add(variance(&u));
        // Distances equal up to their rounding (1e-4 of their mean) do not spread: a
        // variance of rounding noise would blow alpha up.
        let (var, mean) = (
            variance(div),
            div.iter().sum::<f64>() / div.len().max(1) as f64,
        );
        let spread = if var.sqrt() <= 1e-4 * mean { 0.0 } else { var };
        self.state.stats[1].add(spread);
    }

    fn greedy(&mut self, utility: &[f32], sketches: &[f32]) -> Vec<usize> {
        let dim = self.cfg.dim;
        let b = utility.len();
        let mut sums = self.buffer_sums(sketches);
        let buf = &self.state.buffer;
        let norms = sq_norms(sketches, dim);
        let mut dots = Vec::with_capacity(b);
        let mut taken = vec![false; b];
        let mut kept = Vec::with_capacity(self.cfg.keep);
        for count in buf.len()..buf.len() + self.cfg.keep {
            let mut best: Option<(usize, f64)> = None;
            for i in (0..b).filter(|&i| !taken[i]) {
                let div = if count == 0 {
                    0.0
                } else {
                    sums[i] / count as f64
                };
                let s = utility[i] as f64 + self.cfg.alpha * div;
                if best.is_none_or(|(_, bs)| s > bs) {
                    best = Some((i, s));
                }
            }
            let Some((i, _)) = best else { break };
            taken[i] = true;
            kept.push(i);
            // Only the kept rows' distances are needed: one product each.
            let row = &sketches[i * dim..(i + 1) * dim];
            crate::gemm::dot_rows(sketches, row, dim, &mut dots);
            for ((sum, &ab), &a2) in sums.iter_mut().zip(&dots).zip(&norms) {
                *sum += (a2 + norms[i] - 2.0 * ab as f64).max(0.0).sqrt();
            }
        }
        kept
    }

    fn random(&self, b: usize) -> Vec<usize> {
        let mut ids: Vec<usize> = (0..b).collect();
        let base = mix64(self.cfg.seed ^ mix64(self.state.steps));
        for k in 0..self.cfg.keep {
            let r = mix64(base ^ k as u64);
            let j = k + (r % (b - k) as u64) as usize;
            ids.swap(k, j);
        }
        ids.truncate(self.cfg.keep);
        ids
    }
}

/// Population variance of `xs` (0 for fewer than two values).
fn variance(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / xs.len() as f64
}

/// Index of the first NaN or infinity in `xs` (one vectorized pass in the
/// common case of none).
fn first_non_finite(xs: &[f32]) -> Option<usize> {
    if xs.iter().fold(true, |ok, x| ok & x.is_finite()) {
        return None;
    }
    xs.iter().position(|x| !x.is_finite())
}

/// Indices of the `k` largest scores, best first; ties go to the lower index.
pub fn top_k(scores: &[f64], k: usize) -> Vec<usize> {
    let mut ids: Vec<usize> = (0..scores.len()).collect();
    ids.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    ids.truncate(k);
    ids
}
