//! The ordering step's defaults, defined once. The `tokenloom order` flags,
//! the Python bindings' signatures and `tokenloom.order` (through
//! `_core.ORDER_DEFAULTS`) read them; the type stubs are checked against the
//! bindings by stubtest.

/// Training context length in tokens.
pub const SEQ_LEN: u64 = 8192;
/// Nearest neighbours per document.
pub const K: usize = 10;
/// Name of an order (the file `orders/<name>.order`).
pub const NAME: &str = "iclm";
/// Similarity at or above which a document is a near-duplicate of a kept neighbour.
pub const DEDUP: f64 = 0.95;
/// The traversal: `"paper"` (the paper's greedy walk) or `"reference"`.
pub const VARIANT: &str = "paper";
/// Segment cap in documents of the paper's walk (0: none).
pub const MAX_SEGMENT: usize = 0;
/// Seed of tie-breaking, hashing and the report's random baseline.
pub const SEED: u64 = 0;
/// Dimension of the built-in embeddings.
pub const DIM: usize = 256;
/// Tokens read per document by the built-in embedder (0: all).
pub const MAX_TOKENS: usize = 2048;
/// Lists each document is searched in by the staged engines (`engine="ray"`
/// and `"disk"`): its own and the `NPROBE - 1` nearest to it. Recall of the
/// exact 10-NN on clustered vectors (benches/order_recall_bench.py, table in
/// docs/ordering.md): 0.96 at 8 and 0.98 at 16 on 100,000 documents, but
/// 0.82 at 8 and 0.94 at 16 on 1,000,000 (more lists cut each cluster).
pub const NPROBE: usize = 16;
/// Bytes of vectors one kNN task of the staged engines holds at once: the
/// rows of its lists and of their partner lists, float32 in memory plus the
/// float16 pages it reads them from (6 bytes a value). The lists are cut into
/// more groups until each fits (at 10 M documents of d = 256 on two CPUs, 8
/// groups held up to 16 GB; see docs/ordering.md).
pub const TASK_MEMORY: u64 = 2 << 30;
/// Neighbours looked at per step by the reference script (ranks 1..9 of a
/// list that starts with the document itself).
pub const REFERENCE_K_TRAVERSE: usize = 9;
/// The reference script's segment cap and the length below which its
/// segments are dissolved into their neighbours.
pub const REFERENCE_SEGMENT: usize = 21;
