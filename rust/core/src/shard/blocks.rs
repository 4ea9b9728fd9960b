//! Checksums of fixed-size blocks of a shard's token bytes. The manifest
//! records one per block next to the whole-file checksum, so that `verify`
//! names the first damaged block instead of the whole file.

use xxhash_rust::xxh3::Xxh3;

/// Block size the writer uses: 4 MiB, 256 checksums (4 KiB of manifest) per
/// GiB of tokens.
pub const BLOCK_BYTES: u64 = 4 << 20;

/// Hashes a stream of bytes block by block.
pub struct BlockHasher {
    block: u64,
    fill: u64,
    hasher: Xxh3,
    sums: Vec<u64>,
}

impl BlockHasher {
    /// Blocks of `block` bytes (at least 1).
    pub fn new(block: u64) -> Self {
        BlockHasher {
            block: block.max(1),
            fill: 0,
            hasher: Xxh3::new(),
            sums: Vec::new(),
        }
    }

    /// Feeds the next bytes of the stream.
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = (self.block - self.fill).min(bytes.len() as u64) as usize;
            self.hasher.update(&bytes[..room]);
            self.fill += room as u64;
            bytes = &bytes[room..];
            if self.fill == self.block {
                self.sums.push(self.hasher.digest());
                self.hasher.reset();
                self.fill = 0;
            }
        }
    }

    /// Checksums of the blocks completed so far.
    pub fn completed(&self) -> &[u64] {
        &self.sums
    }

    /// Every block's checksum, the last (short) block included.
    pub fn finish(mut self) -> Vec<u64> {
        if self.fill > 0 {
            self.sums.push(self.hasher.digest());
        }
        self.sums
    }
}

/// Blocks of `block` bytes that `bytes` bytes make (the last may be short).
pub fn count(bytes: u64, block: u64) -> u64 {
    bytes.div_ceil(block.max(1))
}

/// The manifest's form: 16 lower-case hex digits per block, concatenated.
pub fn encode(sums: &[u64]) -> String {
    sums.iter().map(|s| format!("{s:016x}")).collect()
}

/// Reads [`encode`]'s form; `None` when it is not one.
pub fn decode(text: &str) -> Option<Vec<u64>> {
    if text.len() % 16 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(16)
        .map(|i| crate::hash::parse_hex(&text[i..i + 16]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use xxhash_rust::xxh3::xxh3_64;

    proptest! {
        // However the stream is cut, the sums are those of the blocks hashed whole.
        #[test]
        fn sums_are_those_of_whole_blocks(
            data in proptest::collection::vec(any::<u8>(), 0..400),
            block in 1u64..64,
            cuts in proptest::collection::vec(0usize..400, 0..6),
        ) {
            let mut h = BlockHasher::new(block);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut at = 0;
            for c in cuts.into_iter().chain([data.len()]) {
                h.update(&data[at..c]);
                at = c;
            }
            let want: Vec<u64> = data.chunks(block as usize).map(xxh3_64).collect();
            prop_assert_eq!(want.len() as u64, count(data.len() as u64, block));
            let got = h.finish();
            prop_assert_eq!(decode(&encode(&got)), Some(got.clone()));
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn decode_refuses_what_encode_does_not_make() {
        assert_eq!(decode(""), Some(vec![]));
        assert_eq!(decode("00000000000000ff"), Some(vec![255]));
        assert_eq!(decode("00000000000000f"), None);
        assert_eq!(decode("00000000000000fg"), None);
    }
}
