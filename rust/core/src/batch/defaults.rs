//! The loader's defaults, defined once. The Python bindings' signatures and
//! `tokenloom.TokenDataset` (through `_core.LOADER_DEFAULTS`) read them;
//! `tests/test_defaults.py` checks that they agree.

/// Seed of the shuffle.
pub const SEED: u64 = 0;
/// Whether the samples of an epoch are shuffled.
pub const SHUFFLE: bool = true;
/// Shuffle window in samples (0: every source shuffled as a whole; see
/// [`crate::shuffle::Windowed`]).
pub const SHUFFLE_WINDOW: u64 = 0;
/// Plan mode when no order is given.
pub const MODE: &str = "concat";
/// Integer type of the batch arrays (numpy's name).
pub const DTYPE: &str = "int64";
/// Whether the last, incomplete batch of an epoch is dropped.
pub const DROP_LAST: bool = true;
/// Token id of padding when the dataset names no end-of-document token.
pub const PAD_ID: i64 = 0;
/// Threads assembling batches in the core.
pub const THREADS: usize = 2;
/// Batches assembled ahead of the one being read.
pub const PREFETCH: usize = 2;
