//! Keyed pseudo-random permutations with random access and O(1) memory.
//!
//! [`Permutation::new`]`(n, key)` is a bijection of `[0, n)`: a four-round
//! Feistel network over the smallest even-bit power-of-two domain that holds
//! `n`, with cycle walking to stay inside `[0, n)` (at most four steps on
//! average). Nothing is materialised, so position `i` of any epoch's order
//! is computed in O(1), and resuming or re-splitting a run needs only a
//! position.

/// A bijection of `[0, n)` chosen by `key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permutation {
    n: u64,
    half_bits: u32,
    keys: [u64; 4],
}

/// SplitMix64 finaliser: a fast, well-mixed 64-bit hash.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Combines several values into one key.
pub fn key_of(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x243F_6A88_85A3_08D3, |k, &p| mix64(k ^ mix64(p)))
}

impl Permutation {
    /// The permutation of `[0, n)` selected by `key`.
    pub fn new(n: u64, key: u64) -> Self {
        let bits = 64 - n.saturating_sub(1).leading_zeros();
        let half_bits = bits.div_ceil(2).max(1);
        let mut keys = [0u64; 4];
        for (r, k) in keys.iter_mut().enumerate() {
            *k = mix64(key ^ mix64(r as u64 + 1));
        }
        Permutation { n, half_bits, keys }
    }

    /// Size of the permuted range.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn feistel(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut l, mut r) = (x >> self.half_bits, x & mask);
        for k in self.keys {
            let f = mix64(r ^ k) & mask;
            (l, r) = (r, l ^ f);
        }
        (l << self.half_bits) | r
    }

    /// The element at position `i` (`i < len()`); `i` itself when out of range.
    pub fn get(&self, i: u64) -> u64 {
        if i >= self.n {
            return i;
        }
        let mut x = self.feistel(i);
        while x >= self.n {
            x = self.feistel(x);
        }
        x
    }
}

/// Blocks a window of a [`Windowed`] order draws from.
pub const WINDOW_BLOCKS: u64 = 16;

/// A shuffle of `[0, n)` that reads the range one window at a time: the
/// range is cut into blocks of consecutive ids (`window / WINDOW_BLOCKS`
/// each), the blocks are visited in a random order, and the ids of every
/// `WINDOW_BLOCKS` blocks visited in a row are shuffled together. A window
/// of positions therefore touches `WINDOW_BLOCKS` runs of consecutive ids:
/// over a dataset stored in order, a handful of shards at a time, so that a
/// cache much smaller than the dataset serves a shuffled read. The short
/// block at the end of the range (`n % block` ids) is visited last, as a
/// window of its own. O(1) per position, like [`Permutation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windowed {
    n: u64,
    block: u64,
    /// Order of the full blocks.
    blocks: Permutation,
    key: u64,
}

impl Windowed {
    /// The order of `[0, n)` selected by `key`, in windows of about `window`
    /// ids (at least `WINDOW_BLOCKS`).
    pub fn new(n: u64, window: u64, key: u64) -> Self {
        let block = (window / WINDOW_BLOCKS).max(1);
        Windowed {
            n,
            block,
            blocks: Permutation::new(n / block, key_of(&[key, 1])),
            key,
        }
    }

    /// Ids in a block (a window holds `WINDOW_BLOCKS` of them).
    pub fn block(&self) -> u64 {
        self.block
    }

    /// The element at position `i` (`i < n`); `i` itself when out of range.
    pub fn get(&self, i: u64) -> u64 {
        if i >= self.n {
            return i;
        }
        let full = self.blocks.len() * self.block;
        if i >= full {
            let tail = Permutation::new(self.n - full, key_of(&[self.key, 2]));
            return full + tail.get(i - full);
        }
        let span = WINDOW_BLOCKS * self.block;
        let (w, at) = (i / span, i % span);
        let size = span.min(full - w * span);
        let local = Permutation::new(size, key_of(&[self.key, 3, w])).get(at);
        let visited = w * WINDOW_BLOCKS + local / self.block;
        self.blocks.get(visited) * self.block + local % self.block
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Every size, window and key gives a bijection, and the positions of
        /// one window come from at most `WINDOW_BLOCKS` runs of `block`
        /// consecutive ids (plus the short tail, read last).
        #[test]
        fn windowed_is_a_bijection_read_a_few_blocks_at_a_time(n in 0u64..5000, window in 1u64..600, key in any::<u64>()) {
            let p = Windowed::new(n, window, key);
            let b = p.block();
            let full = n / b * b;
            let mut seen = vec![false; n as usize];
            let mut window_blocks = std::collections::BTreeSet::new();
            for i in 0..n {
                let x = p.get(i);
                prop_assert!(x < n);
                prop_assert!(!seen[x as usize]);
                seen[x as usize] = true;
                if i < full {
                    if i % (WINDOW_BLOCKS * b) == 0 {
                        window_blocks.clear();
                    }
                    prop_assert!(x < full, "a full block's position reads the tail");
                    window_blocks.insert(x / b);
                    prop_assert!(window_blocks.len() as u64 <= WINDOW_BLOCKS);
                } else {
                    prop_assert!(x >= full, "the tail is read last");
                }
            }
        }
    }

    /// Windows mix their blocks (not one block after another) and the
    /// blocks come in a random order (not the stored one).
    #[test]
    fn windows_mix_their_blocks_and_blocks_are_shuffled() {
        let p = Windowed::new(100_000, 1_600, 9);
        assert_eq!(p.block(), 100);
        let order: Vec<u64> = (0..100_000).map(|i| p.get(i)).collect();
        // 16 consecutive positions of one window: from several blocks.
        let blocks: std::collections::BTreeSet<u64> = order[..16].iter().map(|x| x / 100).collect();
        assert!(blocks.len() >= 8, "{blocks:?}");
        // The first window's blocks are not the first 16 blocks of the range.
        let first: std::collections::BTreeSet<u64> =
            order[..1600].iter().map(|x| x / 100).collect();
        assert_eq!(first.len(), 16);
        assert_ne!(first, (0..16).collect());
        // Another key, another order.
        let q = Windowed::new(100_000, 1_600, 10);
        assert!((0..1000).any(|i| q.get(i) != p.get(i)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Every size and key gives a bijection.
        #[test]
        fn is_a_bijection(n in 0u64..3000, key in any::<u64>()) {
            let p = Permutation::new(n, key);
            let mut seen = vec![false; n as usize];
            for i in 0..n {
                let x = p.get(i);
                prop_assert!(x < n);
                prop_assert!(!seen[x as usize]);
                seen[x as usize] = true;
            }
        }
    }

    #[test]
    fn keys_give_different_orders_and_are_not_identity() {
        let a: Vec<u64> = (0..1000)
            .map(|i| Permutation::new(1000, 1).get(i))
            .collect();
        let b: Vec<u64> = (0..1000)
            .map(|i| Permutation::new(1000, 2).get(i))
            .collect();
        assert_ne!(a, b);
        let fixed = a
            .iter()
            .enumerate()
            .filter(|(i, &x)| *i as u64 == x)
            .count();
        assert!(fixed < 20, "{fixed} fixed points");
        // Neighbours land far apart: a shuffle, not a rotation.
        let close = a.windows(2).filter(|w| w[0].abs_diff(w[1]) < 10).count();
        assert!(close < 50, "{close} close neighbours");
    }

    /// A domain too large to walk: a stretch of positions maps to distinct values spread
    /// over the whole range, not to a shifted or clustered copy of the stretch.
    #[test]
    fn large_domains_are_shuffled_too() {
        let n = (1u64 << 40) + 12_345; // not a power of two: cycle walking is exercised
        let p = Permutation::new(n, 7);
        let values: Vec<u64> = (n - 10_000..n).map(|i| p.get(i)).collect();
        let distinct: std::collections::HashSet<_> = values.iter().collect();
        assert_eq!(distinct.len(), values.len());
        let (lo, hi) = (n / 4, 3 * n / 4);
        let middle = values.iter().filter(|&&x| x >= lo && x < hi).count();
        assert!(
            (4_500..5_500).contains(&middle),
            "{middle} of 10,000 in the middle half"
        );
        assert!(values.iter().all(|&x| x < n));
    }

    #[test]
    fn empty_and_one_element_domains() {
        let empty = Permutation::new(0, 3);
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert_eq!(empty.get(0), 0); // out of range: the position itself
        let one = Permutation::new(1, 3);
        assert!(!one.is_empty());
        assert_eq!(one.get(0), 0);
    }

    /// The Feistel network run backwards, written from its definition: round
    /// `(l, r) -> (r, l ^ F(r))` undone as `(l, r) -> (r ^ F(l), l)`, keys in
    /// reverse order, cycle-walking back into `[0, n)`.
    fn inverse(p: &Permutation, x: u64) -> u64 {
        let mask = (1u64 << p.half_bits) - 1;
        let back = |x: u64| {
            let (mut l, mut r) = (x >> p.half_bits, x & mask);
            for &k in p.keys.iter().rev() {
                (l, r) = (r ^ (mix64(l ^ k) & mask), l);
            }
            (l << p.half_bits) | r
        };
        let mut y = back(x);
        while y >= p.n {
            y = back(y);
        }
        y
    }

    /// At sizes far beyond what can be enumerated (2^40 and an odd size just
    /// under it, which needs cycle walking), sampled positions land anywhere
    /// in the range, spread over it, and the inverse gives the position back:
    /// no two positions share an element.
    #[test]
    fn large_domains_are_bijections_spread_over_the_range() {
        for n in [1u64 << 40, (1 << 40) - 12_345, 3_000_000_000_017] {
            let p = Permutation::new(n, 7);
            let mut rng = 0x5EEDu64;
            let mut positions: Vec<u64> = vec![0, 1, n / 2, n - 2, n - 1];
            positions.extend((0..4000).map(|_| {
                rng = mix64(rng);
                rng % n
            }));
            let mut upper_half = 0usize;
            let mut seen = std::collections::HashSet::new();
            for &i in &positions {
                let x = p.get(i);
                assert!(x < n, "n {n}: position {i} gave {x}");
                assert_eq!(inverse(&p, x), i, "n {n}: position {i}");
                seen.insert(x);
                upper_half += usize::from(x >= n / 2);
            }
            let distinct: std::collections::HashSet<u64> = positions.iter().copied().collect();
            assert_eq!(seen.len(), distinct.len());
            // Each image is in the upper half with probability 1/2: 4,005 draws
            // fall within 45-55 % with overwhelming probability (> 6 sigma).
            let share = upper_half as f64 / positions.len() as f64;
            assert!(
                (0.45..0.55).contains(&share),
                "n {n}: {share} in the upper half"
            );
        }
    }
}
