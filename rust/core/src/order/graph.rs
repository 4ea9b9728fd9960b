//! The undirected document graph of In-Context Pretraining: `(a, b)` is an
//! edge when either lists the other among its nearest neighbours, weighted by
//! their similarity. Stored as compressed adjacency lists, each sorted by
//! similarity (highest first, ties by smaller id), so "the most similar
//! unvisited neighbour" is the first unvisited entry.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// Directed nearest-neighbour lists, row-major `[n, k]`: row `i` lists the
/// neighbours of document `i`, most similar first. `-1` marks "no neighbour"
/// (as faiss writes it) and is skipped.
#[derive(Clone, Copy, Debug)]
pub struct KnnLists<'a> {
    /// Documents (rows).
    pub n: usize,
    /// Neighbours per row.
    pub k: usize,
    /// Neighbour ids, `n * k` entries.
    pub ids: &'a [i64],
    /// Similarities, `n * k` entries; `None` when only ids are known (ranks
    /// then stand in: rank `r` gets `1 - r / k`).
    pub sims: Option<&'a [f32]>,
    /// Drop entries naming the row itself (faiss lists the query first)
    /// instead of refusing them.
    pub drop_self: bool,
}

impl KnnLists<'_> {
    /// Checks shapes, ranges and values; the error names the row and rank.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Error::invalid("knn", what);
        if self.k == 0 || self.ids.len() != self.n * self.k {
            return Err(bad(format!(
                "expected an [n, k] matrix with n = {} documents and k >= 1, got {} ids",
                self.n,
                self.ids.len()
            )));
        }
        if let Some(s) = self.sims {
            if s.len() != self.ids.len() {
                return Err(bad(format!(
                    "the similarities have {} entries but the neighbour ids have {}; both must be [n, k]",
                    s.len(),
                    self.ids.len()
                )));
            }
        }
        let row_error = |i: usize| -> Option<String> {
            for r in 0..self.k {
                let e = i * self.k + r;
                let j = self.ids[e];
                if j == -1 {
                    continue;
                }
                if j < 0 || j as u64 >= self.n as u64 {
                    return Some(format!(
                        "row {i}, rank {r} names document {j}, outside [0, {}); the kNN matrix must index this dataset's documents (-1 means no neighbour)",
                        self.n
                    ));
                }
                if j as usize == i && !self.drop_self {
                    return Some(format!(
                        "row {i}, rank {r} names the document itself; drop the query column (faiss puts it first: knn[:, 1:]) or pass drop_self=True"
                    ));
                }
                if let Some(s) = self.sims {
                    if !s[e].is_finite() {
                        return Some(format!("row {i}, rank {r} has similarity {}", s[e]));
                    }
                }
            }
            None
        };
        if let Some(what) = (0..self.n)
            .into_par_iter()
            .with_min_len(4096)
            .find_map_first(row_error)
        {
            return Err(bad(what));
        }
        Ok(())
    }

    /// Similarity of entry `e` (row-major).
    fn sim(&self, e: usize) -> f32 {
        match self.sims {
            Some(s) => s[e],
            None => 1.0 - (e % self.k) as f32 / self.k as f32,
        }
    }

    /// Valid neighbour ids of row `i`, in rank order.
    pub fn row_ids(&self, i: usize) -> impl Iterator<Item = u32> + '_ {
        self.ids[i * self.k..(i + 1) * self.k]
            .iter()
            .filter(move |&&j| j >= 0 && j as usize != i)
            .map(|&j| j as u32)
    }

    /// Valid neighbours of row `i`, in rank order, as `(id, similarity)`.
    pub fn row(&self, i: usize) -> impl Iterator<Item = (u32, f32)> + '_ {
        (i * self.k..(i + 1) * self.k).filter_map(move |e| {
            let j = self.ids[e];
            (j >= 0 && j as usize != i).then(|| (j as u32, self.sim(e)))
        })
    }

    /// Similarity of the pair `(a, b)` when either lists the other (the
    /// higher of the two when both do), as an undirected edge.
    pub fn edge(&self, a: usize, b: u32) -> Option<f32> {
        if a == b as usize {
            return None;
        }
        // Missing (-1) and self entries never equal the other document: no filter needed.
        let of = |x: usize, y: u32| {
            let row = &self.ids[x * self.k..(x + 1) * self.k];
            row.iter()
                .enumerate()
                .filter(|&(_, &j)| j == y as i64)
                .map(|(r, _)| self.sim(x * self.k + r))
                .reduce(f32::max)
        };
        match (of(a, b), of(b as usize, a as u32)) {
            (Some(p), Some(q)) => Some(p.max(q)),
            (p, q) => p.or(q),
        }
    }
}

/// Packs `(sim, id)` so that ascending `u64` order is similarity descending, then id
/// ascending.
fn pack(sim: f32, id: u32) -> u64 {
    let b = sim.to_bits();
    let mono = if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    };
    ((!mono as u64) << 32) | id as u64
}

fn unpack(key: u64) -> (f32, u32) {
    let mono = !((key >> 32) as u32);
    let b = if mono & 0x8000_0000 != 0 {
        mono & 0x7fff_ffff
    } else {
        !mono
    };
    (f32::from_bits(b), key as u32)
}

/// Undirected weighted adjacency lists.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    offsets: Vec<u64>,
    ids: Vec<u32>,
    sims: Vec<f32>,
}

impl Graph {
    /// The undirected graph of `knn` (validated first). O(n·k·log k), in
    /// parallel: the documents are cut into one range per thread, and each
    /// range gathers its own lists (its rows, then the rows that name its
    /// documents), sorts and deduplicates them.
    pub fn from_knn(knn: &KnnLists<'_>) -> Result<Self> {
        knn.validate()?;
        Ok(Self::from_valid_knn(knn))
    }

    /// [`from_knn`](Self::from_knn) of lists that passed
    /// [`KnnLists::validate`] (ids out of range would panic).
    pub fn from_valid_knn(knn: &KnnLists<'_>) -> Self {
        let n = knn.n;
        let parts = rayon::current_num_threads().clamp(1, n.max(1));
        let bounds: Vec<usize> = (0..=parts).map(|p| p * n / parts).collect();
        // Degree of each document: its own valid entries plus the rows naming it.
        let degree: Vec<u32> = bounds
            .par_windows(2)
            .flat_map_iter(|w| {
                let (lo, hi) = (w[0], w[1]);
                let mut deg: Vec<u32> = (lo..hi).map(|i| knn.row(i).count() as u32).collect();
                for i in 0..n {
                    for (j, _) in knn.row(i) {
                        if let Some(d) = (j as usize).checked_sub(lo).and_then(|x| deg.get_mut(x)) {
                            *d += 1;
                        }
                    }
                }
                deg
            })
            .collect();
        let offsets = prefix_sums(degree.iter().map(|&d| d as u64));
        // Each entry packed as (similarity descending, id ascending) in one u64, so that a
        // plain integer sort orders a list.
        let mut keys = vec![0u64; offsets[n] as usize];
        let kept: Vec<u32> = split_by(&mut keys, &offsets, &bounds)
            .into_par_iter()
            .zip(bounds.par_windows(2))
            .flat_map_iter(|(chunk, w)| {
                let (lo, hi, base) = (w[0], w[1], offsets[w[0]]);
                let mut fill: Vec<usize> = (lo..hi).map(|i| (offsets[i] - base) as usize).collect();
                for i in lo..hi {
                    for (j, s) in knn.row(i) {
                        chunk[fill[i - lo]] = pack(s, j);
                        fill[i - lo] += 1;
                    }
                }
                for i in 0..n {
                    for (j, s) in knn.row(i) {
                        if let Some(f) = (j as usize).checked_sub(lo).and_then(|x| fill.get_mut(x))
                        {
                            chunk[*f] = pack(s, i as u32);
                            *f += 1;
                        }
                    }
                }
                // Keep each neighbour once (its highest similarity, which sorts first).
                let mut mark = vec![u32::MAX; n];
                (lo..hi)
                    .map(|i| {
                        let list = &mut chunk
                            [(offsets[i] - base) as usize..(offsets[i + 1] - base) as usize];
                        list.sort_unstable();
                        let mut w = 0;
                        for r in 0..list.len() {
                            let id = list[r] as u32 as usize;
                            if mark[id] != i as u32 {
                                mark[id] = i as u32;
                                list[w] = list[r];
                                w += 1;
                            }
                        }
                        w as u32
                    })
                    .collect::<Vec<u32>>()
            })
            .collect();
        let new_offsets = prefix_sums(kept.iter().map(|&d| d as u64));
        let total = new_offsets[n] as usize;
        let (mut ids, mut sims) = (vec![0u32; total], vec![0f32; total]);
        split_by(&mut ids, &new_offsets, &bounds)
            .into_par_iter()
            .zip(split_by(&mut sims, &new_offsets, &bounds))
            .zip(bounds.par_windows(2))
            .for_each(|((ids, sims), w)| {
                let mut at = 0;
                for i in w[0]..w[1] {
                    let list = &keys[offsets[i] as usize..][..kept[i] as usize];
                    for &key in list {
                        (sims[at], ids[at]) = unpack(key);
                        at += 1;
                    }
                }
            });
        Graph {
            offsets: new_offsets,
            ids,
            sims,
        }
    }

    /// Documents (nodes).
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Undirected edges.
    pub fn num_edges(&self) -> usize {
        self.ids.len() / 2
    }

    /// Neighbours of `i`, most similar first.
    pub fn neighbors(&self, i: usize) -> &[u32] {
        &self.ids[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Similarities matching [`neighbors`](Self::neighbors).
    pub fn sims(&self, i: usize) -> &[f32] {
        &self.sims[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// `[0, a0, a0 + a1, ...]`: the offsets of consecutive lists of these lengths.
fn prefix_sums(lengths: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut out = vec![0u64];
    let mut total = 0;
    for l in lengths {
        total += l;
        out.push(total);
    }
    out
}

/// `data` cut at `offsets[bounds[p]]`: one mutable chunk per range of lists.
fn split_by<'a, T>(mut data: &'a mut [T], offsets: &[u64], bounds: &[usize]) -> Vec<&'a mut [T]> {
    let mut out = Vec::with_capacity(bounds.len().saturating_sub(1));
    for w in bounds.windows(2) {
        let (head, tail) = data.split_at_mut((offsets[w[1]] - offsets[w[0]]) as usize);
        out.push(head);
        data = tail;
    }
    out
}
