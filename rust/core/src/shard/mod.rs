//! The on-disk dataset: a directory with `manifest.json` and, per shard, a
//! `.bin` of little-endian tokens and an `.idx` of document offsets.
//! The byte-level specification is `docs/format.md`.

pub mod blocks;
pub mod compat;
pub mod compression;
pub mod dtype;
mod generation;
pub mod index;
pub mod lock;
pub mod manifest;
mod mapped_shard;
pub mod merge;
mod names;
pub mod reader;
pub mod scan;
pub mod source;
pub mod summary;
pub mod verify;
pub mod writer;

pub use compression::Compression;
pub use dtype::{DType, TokenBuf, Tokens};
pub use index::{IndexHeader, IndexView, Layout};
pub use lock::TargetLock;
pub use manifest::{Manifest, ShardEntry};
pub use merge::{check_compatible, merge, merge_locked};
pub use names::sidecar_name;
pub use reader::{Acquired, Capacity, ShardProvider};
pub use reader::{Dataset, Shard};
pub use scan::{
    default_index_path, index_raw, is_tokenloom_index, Boundary, RawHeader, RawIndexOptions,
    RawIndexReport,
};
pub use source::Sources;
pub use summary::DatasetSummary;
pub use verify::{verify, VerifyOptions, VerifyReport};
pub use writer::{DatasetWriter, TokenInt, WriterOptions};
