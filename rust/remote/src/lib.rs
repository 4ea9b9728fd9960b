//! tokenloom-remote: datasets in object stores (S3 and S3-compatible
//! stores, Google Cloud Storage, Azure Blob Storage, HTTP) read through a
//! bounded local shard cache, and written with their manifest last.
//!
//! A remote dataset opens as an ordinary [`Dataset`] whose indexes are
//! mapped from the cache and whose shard bodies come on demand through its
//! [`ShardProvider`](tokenloom_core::shard::ShardProvider): the core's
//! loader fetches the shards its plan reads next and maps them from the
//! cache, so everything downstream of the reader is unchanged. The async
//! runtime stays inside this crate.

mod cache;
mod checked;
mod fetch;
pub mod location;
pub mod options;
mod shards;
mod store;
pub mod upload;

use std::path::Path;

pub use location::{is_url, Kind, Location};
pub use options::RemoteOptions;
pub use shards::cache_dir_of;
pub use upload::{staging_dir, upload_dataset, RemoteWriter};

use tokenloom_core::shard::manifest::FILE_NAME;
use tokenloom_core::shard::Manifest;
use tokenloom_core::{Dataset, Result};

/// Opens a dataset given as a local path, a `file://` URL or an object
/// store URL. Local datasets open as [`Dataset::open`] opens them, except
/// compressed ones, which are read through the cache like remote ones.
pub fn open(path: &str, opts: &RemoteOptions) -> Result<Dataset> {
    match Location::parse(path)? {
        Location::Local(p) => {
            if is_compressed(&p) {
                let store = store::Store::local(&p, opts)?;
                shards::open_remote(store, opts)
            } else {
                Dataset::open(&p)
            }
        }
        Location::Remote { url, kind } => {
            let store = store::Store::new(&url, kind, opts)?;
            shards::open_remote(store, opts)
        }
    }
}

/// Whether `dir` holds a dataset whose shard bodies are compressed.
fn is_compressed(dir: &Path) -> bool {
    dir.join(FILE_NAME).is_file() && Manifest::load(dir).is_ok_and(|m| m.compression.is_some())
}
