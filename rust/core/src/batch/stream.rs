//! A training stream: its sources (datasets with their plans), the mixture
//! over them and the fingerprint that loader states carry. One constructor
//! assembles it from paths and settings; the bindings only convert types.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::schedule::Mixture;
use crate::error::{Error, Result};
use crate::order_file::Order;
use crate::plan::{cache, Boundaries, Plan, PlanMode};
use crate::shard::Dataset;
use crate::shuffle::key_of;

/// Marks a windowed shuffle in a stream's fingerprint.
const WINDOW_TAG: u64 = 0x5749_4e44_4f57; // "WINDOW"

/// What a stream is made of.
#[derive(Clone, Debug)]
pub struct StreamSpec {
    /// Dataset directories (or files the readers accept), one per source.
    pub paths: Vec<PathBuf>,
    /// Sampling weight of each source; `None`: each source's number of
    /// samples (every sample once per epoch).
    pub weights: Option<Vec<f64>>,
    /// Training length in tokens.
    pub seq_len: u64,
    /// How documents become samples.
    pub mode: PlanMode,
    /// An order file (a path, or a name under the dataset's `orders/`); one
    /// source only.
    pub order: Option<PathBuf>,
    /// Seed of the shuffle and the mixture.
    pub seed: u64,
    /// Shuffle the samples of each epoch.
    pub shuffle: bool,
    /// Shuffle each source in windows of this many samples, a few runs of
    /// consecutive samples at a time (0: as a whole).
    pub shuffle_window: u64,
    /// Where each source's plan is cached (`None`: not cached).
    pub cache_dirs: Vec<Option<PathBuf>>,
    /// What position ids and `cu_seqlens` delimit (`None`: the mode's default).
    pub boundaries: Option<Boundaries>,
}

/// The assembled stream, shared by every loader made from it.
pub struct Stream {
    /// The sources, each a dataset with its plan.
    pub sources: Vec<(Arc<Dataset>, Arc<Plan>)>,
    /// The weights the mixture uses.
    pub weights: Vec<f64>,
    /// The mixture over the sources.
    pub mixture: Mixture,
    /// Identifies sources, plans, weights, seed and shuffling.
    pub fingerprint: u64,
    /// The same over the datasets' legacy fingerprints: states saved before
    /// the fingerprint covered document boundaries carry it.
    pub legacy_fingerprint: u64,
    /// Whether each source's plan was read from its cache.
    pub cached: Vec<bool>,
    /// The `seq_len` the order file was made for, when it records one.
    pub order_seq_len: Option<u64>,
    /// What position ids and `cu_seqlens` delimit (`None`: the mode's default).
    pub boundaries: Option<Boundaries>,
}

impl Stream {
    /// Opens the sources, builds (or reads from the cache) their plans and
    /// the mixture.
    pub fn open(spec: StreamSpec) -> Result<Self> {
        Self::open_with(spec, |p| Dataset::open(p))
    }

    /// [`Stream::open`] with the datasets opened by `open` (e.g. one that
    /// also reads remote URLs through a local cache). An order named
    /// relative to the first dataset resolves against that dataset's root
    /// on disk (a remote dataset's cache directory).
    pub fn open_with(spec: StreamSpec, open: impl Fn(&Path) -> Result<Dataset>) -> Result<Self> {
        let StreamSpec {
            paths,
            weights,
            seq_len,
            mode,
            order,
            seed,
            shuffle,
            shuffle_window,
            cache_dirs,
            boundaries,
        } = spec;
        if paths.is_empty() {
            return Err(Error::invalid("paths", "at least one dataset is needed"));
        }
        if order.is_some() && paths.len() != 1 {
            return Err(Error::invalid(
                "order",
                "an order file applies to a single dataset; mix ordered datasets by giving each its own TokenDataset",
            ));
        }
        let datasets = paths.iter().map(|p| open(p)).collect::<Result<Vec<_>>>()?;
        let base = match datasets.first() {
            Some(d) if d.provider().is_some() => d.root().to_path_buf(),
            _ => paths[0].clone(),
        };
        let order = order
            .map(|p| Order::read(&crate::order::store::resolve(&base, &p)?))
            .transpose()?;
        let order_seq_len = order.as_ref().and_then(Order::seq_len);
        let mut sources = Vec::with_capacity(paths.len());
        let mut cached = Vec::with_capacity(paths.len());
        for (i, ds) in datasets.into_iter().enumerate() {
            let dir = cache_dirs.get(i).cloned().flatten();
            let (plan, hit) =
                cache::load_or_build(&ds, mode, seq_len, order.as_ref(), dir.as_deref())?;
            cached.push(hit);
            sources.push((Arc::new(ds), Arc::new(plan)));
        }
        let manifests: Vec<_> = paths
            .iter()
            .zip(&sources)
            .map(|(p, (d, _))| (p.as_path(), d.manifest()))
            .collect();
        crate::shard::check_compatible(&manifests, "mix")?;
        let sizes: Vec<u64> = sources.iter().map(|(_, p)| p.num_samples()).collect();
        let weights = weights.unwrap_or_else(|| sizes.iter().map(|&n| n as f64).collect());
        let mixture =
            Mixture::new(sizes, weights.clone(), seed, shuffle)?.with_window(shuffle_window);
        let mut parts = vec![seed, u64::from(shuffle)];
        if shuffle && shuffle_window > 0 {
            // Streams shuffled as a whole keep the fingerprints they had.
            parts.extend([WINDOW_TAG, shuffle_window]);
        }
        let mut legacy = parts.clone();
        for ((d, p), w) in sources.iter().zip(&weights) {
            parts.push(p.fingerprint());
            parts.push(w.to_bits());
            let plan_order = order.as_ref().filter(|_| p.mode() == PlanMode::Ordered);
            legacy.push(Plan::fingerprint_from(
                d.legacy_fingerprint(),
                p.mode(),
                p.seq_len(),
                plan_order,
            ));
            legacy.push(w.to_bits());
        }
        if sources.len() > 1 {
            parts.push(Mixture::RULE);
            legacy.push(Mixture::RULE);
        }
        Ok(Stream {
            sources,
            weights,
            mixture,
            fingerprint: key_of(&parts),
            legacy_fingerprint: key_of(&legacy),
            cached,
            order_seq_len,
            boundaries,
        })
    }

    /// End-of-document token of the first source, when its manifest knows it.
    pub fn eos_id(&self) -> Option<u64> {
        self.sources.first().and_then(|(d, _)| d.manifest().eos_id)
    }

    /// `(bytes, limit)` when the sources read through a provider (remote
    /// ones: shard bodies, manifests and indexes) take more bytes than the
    /// smallest provider's limit: a shuffled read of them then fetches
    /// shards again and again (docs/remote.md measures by how much). `None`
    /// when they fit, or no source has a provider.
    pub fn over_capacity(&self) -> Option<(u64, u64)> {
        let mut bytes = 0u64;
        let mut limit = u64::MAX;
        let mut seen = Vec::new();
        for (ds, _) in &self.sources {
            let Some(p) = ds.provider() else { continue };
            if seen.contains(&ds.root()) {
                continue; // one dataset given twice is cached once
            }
            seen.push(ds.root());
            let cap = p.capacity();
            let bodies = ds.num_tokens() * ds.dtype().itemsize() as u64;
            bytes = bytes.saturating_add(bodies).saturating_add(cap.fixed);
            limit = limit.min(cap.limit);
        }
        (limit != u64::MAX && bytes > limit).then_some((bytes, limit))
    }
}
