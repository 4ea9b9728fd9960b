//! Token element types and borrowed token slices.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The element type of stored tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// Unsigned 16-bit tokens (vocabularies up to 65,536).
    U16,
    /// Unsigned 32-bit tokens.
    U32,
}

impl DType {
    /// Bytes per token.
    pub fn itemsize(self) -> usize {
        match self {
            DType::U16 => 2,
            DType::U32 => 4,
        }
    }
    /// The code stored in `.idx` headers.
    pub fn code(self) -> u32 {
        match self {
            DType::U16 => 1,
            DType::U32 => 2,
        }
    }
    /// The dtype for an `.idx` header code.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(DType::U16),
            2 => Some(DType::U32),
            _ => None,
        }
    }
    /// Canonical name: `"u16"` or `"u32"`.
    pub fn name(self) -> &'static str {
        match self {
            DType::U16 => "u16",
            DType::U32 => "u32",
        }
    }
    /// Largest token value the dtype can hold.
    pub fn max_token(self) -> u64 {
        match self {
            DType::U16 => u16::MAX as u64,
            DType::U32 => u32::MAX as u64,
        }
    }
    /// The smallest dtype that holds every id of a vocabulary of `vocab_size`.
    pub fn for_vocab(vocab_size: u64) -> Self {
        if vocab_size <= 1 << 16 {
            DType::U16
        } else {
            DType::U32
        }
    }
    /// Parses `u16`/`uint16`/`u32`/`uint32`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "u16" | "uint16" => Ok(DType::U16),
            "u32" | "uint32" => Ok(DType::U32),
            other => Err(Error::invalid(
                "dtype",
                format!("{other:?} is not a token dtype; use \"u16\" (vocabularies up to 65,536) or \"u32\""),
            )),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A borrowed run of tokens of either dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tokens<'a> {
    /// u16 tokens.
    U16(&'a [u16]),
    /// u32 tokens.
    U32(&'a [u32]),
}

impl<'a> Tokens<'a> {
    /// Views little-endian token bytes as tokens. `bytes` must be aligned to
    /// the item size and a whole number of items (true for mapped shards).
    pub fn from_bytes(dtype: DType, bytes: &'a [u8]) -> Option<Self> {
        match dtype {
            DType::U16 => bytemuck::try_cast_slice(bytes).ok().map(Tokens::U16),
            DType::U32 => bytemuck::try_cast_slice(bytes).ok().map(Tokens::U32),
        }
    }
    /// Number of tokens.
    pub fn len(&self) -> usize {
        match self {
            Tokens::U16(t) => t.len(),
            Tokens::U32(t) => t.len(),
        }
    }
    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The dtype of the tokens.
    pub fn dtype(&self) -> DType {
        match self {
            Tokens::U16(_) => DType::U16,
            Tokens::U32(_) => DType::U32,
        }
    }
    /// Token `i` widened to u32.
    pub fn get(&self, i: usize) -> Option<u32> {
        match self {
            Tokens::U16(t) => t.get(i).map(|&v| v as u32),
            Tokens::U32(t) => t.get(i).copied(),
        }
    }
    /// The tokens widened to u32 (copies).
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            Tokens::U16(t) => t.iter().map(|&v| v as u32).collect(),
            Tokens::U32(t) => t.to_vec(),
        }
    }
    /// The raw little-endian bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        match self {
            Tokens::U16(t) => bytemuck::cast_slice(t),
            Tokens::U32(t) => bytemuck::cast_slice(t),
        }
    }
    /// Position and value of the first token `>= limit`, if any.
    pub fn first_at_or_above(&self, limit: u64) -> Option<(usize, u64)> {
        fn find<T: Copy + Into<u64>>(t: &[T], limit: u64) -> Option<(usize, u64)> {
            // Cheap vectorisable max first; locate only when something is out of range.
            let max = t.iter().fold(0u64, |m, &v| m.max(v.into()));
            if max < limit {
                return None;
            }
            t.iter()
                .position(|&v| v.into() >= limit)
                .map(|i| (i, t[i].into()))
        }
        match self {
            Tokens::U16(t) => find(t, limit),
            Tokens::U32(t) => find(t, limit),
        }
    }
}

/// Tokens copied out of a file, in a buffer reused from read to read (see
/// [`Shard::read_tokens`](super::Shard::read_tokens)).
#[derive(Clone, Debug, Default)]
pub struct TokenBuf {
    u16: Vec<u16>,
    u32: Vec<u32>,
}

/// `v` grown (fallibly) to at least `n` elements; its first `n`.
fn room<T: Copy + Default>(v: &mut Vec<T>, n: usize) -> Result<&mut [T]> {
    if v.len() < n {
        v.try_reserve(n - v.len())
            .map_err(|_| Error::invalid("tokens", format!("{n} tokens do not fit in memory")))?;
        v.resize(n, T::default());
    }
    Ok(&mut v[..n])
}

impl TokenBuf {
    /// Makes room for `n` tokens of `dtype`, lets `fill` write their
    /// little-endian bytes, and returns them.
    pub fn fill_with(
        &mut self,
        dtype: DType,
        n: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Tokens<'_>> {
        Ok(match dtype {
            DType::U16 => {
                fill(bytemuck::cast_slice_mut(room(&mut self.u16, n)?))?;
                Tokens::U16(&self.u16[..n])
            }
            DType::U32 => {
                fill(bytemuck::cast_slice_mut(room(&mut self.u32, n)?))?;
                Tokens::U32(&self.u32[..n])
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_and_codes_round_trip() {
        for d in [DType::U16, DType::U32] {
            assert_eq!(DType::parse(d.name()).unwrap(), d);
            assert_eq!(DType::from_code(d.code()), Some(d));
        }
        assert_eq!(DType::parse("uint16").unwrap(), DType::U16);
        assert!(DType::parse("f32").is_err());
        assert_eq!(DType::from_code(0), None);
    }

    #[test]
    fn vocab_picks_smallest_dtype() {
        assert_eq!(DType::for_vocab(50_257), DType::U16);
        assert_eq!(DType::for_vocab(65_536), DType::U16);
        assert_eq!(DType::for_vocab(65_537), DType::U32);
    }

    #[test]
    fn out_of_range_search_finds_first() {
        let t = [1u16, 7, 3, 9, 2];
        assert_eq!(Tokens::U16(&t).first_at_or_above(7), Some((1, 7)));
        assert_eq!(Tokens::U16(&t).first_at_or_above(10), None);
    }
}
