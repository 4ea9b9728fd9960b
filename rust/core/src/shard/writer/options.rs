//! What a new dataset is written with: its settings, and the integer types
//! accepted as tokens.

use crate::shard::dtype::DType;

/// Default shard size: about 1 GiB of tokens.
pub const DEFAULT_SHARD_BYTES: u64 = 1 << 30;

/// Settings of a new dataset.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// Token dtype on disk.
    pub dtype: DType,
    /// End-of-document token id, recorded in the manifest.
    pub eos_id: Option<u64>,
    /// Vocabulary size; when set, every token must be below it.
    pub vocab_size: Option<u64>,
    /// Tokenizer fingerprint, recorded in the manifest.
    pub tokenizer: Option<String>,
    /// A shard is closed before it would grow past this many bytes (a
    /// document larger than this gets a shard of its own).
    pub shard_bytes: u64,
    /// Replace an existing dataset at the same path (atomically).
    pub overwrite: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            dtype: DType::U16,
            eos_id: None,
            vocab_size: None,
            tokenizer: None,
            shard_bytes: DEFAULT_SHARD_BYTES,
            overwrite: false,
        }
    }
}

/// Integer types accepted as tokens.
pub trait TokenInt: Copy {
    /// The value, negative ones included (for messages).
    fn to_i128(self) -> i128;
    /// Whether the value is negative or at least `limit` (branch-free).
    fn outside(self, limit: u64) -> bool;
    /// The value as `u64`, for values already checked to be in range.
    fn bits(self) -> u64;
}

macro_rules! token_int {
    (unsigned: $($t:ty),*; signed: $($s:ty),*) => {
        $(impl TokenInt for $t {
            #[inline] fn to_i128(self) -> i128 { self as i128 }
            #[inline] fn outside(self, limit: u64) -> bool { self as u64 >= limit }
            #[inline] fn bits(self) -> u64 { self as u64 }
        })*
        $(impl TokenInt for $s {
            #[inline] fn to_i128(self) -> i128 { self as i128 }
            #[inline] fn outside(self, limit: u64) -> bool { (self < 0) | (self as u64 >= limit) }
            #[inline] fn bits(self) -> u64 { self as u64 }
        })*
    };
}
token_int!(unsigned: u8, u16, u32, u64, usize; signed: i8, i16, i32, i64, isize);
