//! tokenloom-core: the on-disk token dataset format and the algorithms around it.
//!
//! This crate has no Python dependency; the `tokenloom` binary and the Python
//! bindings are thin layers over it.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(not(target_endian = "little"))]
compile_error!("tokenloom stores little-endian tokens and maps them in place; big-endian hosts are not supported");

pub mod batch;
pub mod error;
#[doc(hidden)]
pub mod gemm;
pub mod hash;
pub mod io;
pub mod order;
pub mod order_file;
pub mod plan;
mod prefetch;
pub mod progress;
pub mod select;
pub mod shard;
pub mod shuffle;

pub use error::{Error, Result};
pub use progress::{CancelToken, NoProgress, Progress};
pub use shard::{
    DType, Dataset, DatasetSummary, DatasetWriter, Manifest, Tokens, VerifyOptions, VerifyReport,
    WriterOptions,
};
