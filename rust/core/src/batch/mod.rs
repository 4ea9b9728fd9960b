//! From plans to batches: the sample stream ([`schedule`]), batch arrays
//! ([`assemble`]) and the prefetching [`loader`].

pub mod assemble;
pub mod defaults;
mod guard;
pub mod loader;
mod resident;
pub mod schedule;
pub mod stream;

pub use assemble::{assemble, Batch, BatchConfig, IntBuf, OutDType};
pub use loader::{LoadedBatch, Loader, LoaderSpec, Source};
pub use schedule::{Cursor, Mixture, Sharding};
pub use stream::{Stream, StreamSpec};

#[cfg(test)]
mod tests;
