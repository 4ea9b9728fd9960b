//! The undirected document graph of In-Context Pretraining: `(a, b)` is an
//! edge when either lists the other among its nearest neighbours, weighted by
//! their similarity. Stored as compressed adjacency lists, each sorted by
//! similarity (highest first, ties by smaller id), so "the most similar
//! unvisited neighbour" is the first unvisited entry.

use std::sync::atomic::{AtomicU64, Ordering};

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
        if self.n > u32::MAX as usize {
            return Err(bad(format!(
                "{} documents: ordering supports at most 2^32 - 1 (ids are 32-bit)",
                self.n
            )));
        }
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
    /// parallel.
    pub fn from_knn(knn: &KnnLists<'_>) -> Result<Self> {
        knn.validate()?;
        Self::from_valid_knn(knn)
    }

    /// [`from_knn`](Self::from_knn) of lists that passed
    /// [`KnnLists::validate`] (ids out of range would panic).
    ///
    /// A parallel counting sort: the rows are cut into one range per thread;
    /// each range counts the entries it sends to every document, which fixes
    /// where each range writes; then each list (a document's own entries, then
    /// those of the rows naming it) is sorted and deduplicated.
    pub fn from_valid_knn(knn: &KnnLists<'_>) -> Result<Self> {
        let n = knn.n;
        // Each range keeps a count per document: at most 8 ranges, and at most
        // 1 GiB of counts beyond the first, bound that memory.
        let parts = rayon::current_num_threads()
            .clamp(1, 8)
            .min(1 + (1usize << 28) / n.max(1))
            .min(n.max(1));
        let bounds: Vec<usize> = (0..=parts).map(|p| p * n / parts).collect();
        let ranges = || bounds.par_windows(2).map(|w| w[0]..w[1]);
        let own: Vec<u32> = (0..n)
            .into_par_iter()
            .with_min_len(4096)
            .map(|i| knn.row(i).count() as u32)
            .collect();
        // sent[p][j]: entries naming j in the rows of range p.
        let mut sent: Vec<Vec<u32>> = ranges()
            .map(|rows| {
                let mut c = vec![0u32; n];
                for i in rows {
                    for (j, _) in knn.row(i) {
                        c[j as usize] = c[j as usize].saturating_add(1);
                    }
                }
                c
            })
            .collect();
        let mut offsets = vec![0u64; n + 1];
        for j in 0..n {
            let named: u64 = sent.iter().map(|c| c[j] as u64).sum();
            let degree = own[j] as u64 + named;
            if degree >= u32::MAX as u64 {
                return Err(Error::invalid(
                    "knn",
                    format!("document {j} is named {degree} times; a document's neighbours must number under 2^32 - 1"),
                ));
            }
            offsets[j + 1] = offsets[j] + degree;
        }
        // Turn the counts into each range's first write position in each list.
        for j in 0..n {
            let mut at = own[j];
            for c in sent.iter_mut() {
                (c[j], at) = (at, at + c[j]);
            }
        }
        // Each entry packed as (similarity descending, id ascending) in one u64, so that a
        // plain integer sort orders a list. Ranges write disjoint slots.
        let slots: Vec<AtomicU64> = (0..offsets[n])
            .into_par_iter()
            .map(|_| AtomicU64::new(0))
            .collect();
        ranges().zip(sent.par_iter_mut()).for_each(|(rows, at)| {
            for i in rows {
                for (mine, (j, s)) in (offsets[i] as usize..).zip(knn.row(i)) {
                    slots[mine].store(pack(s, j), Ordering::Relaxed);
                    let theirs = &mut at[j as usize];
                    slots[offsets[j as usize] as usize + *theirs as usize]
                        .store(pack(s, i as u32), Ordering::Relaxed);
                    *theirs += 1;
                }
            }
        });
        drop(sent);
        let mut keys: Vec<u64> = slots.into_iter().map(AtomicU64::into_inner).collect();
        // Keep each neighbour once (its highest similarity, which sorts first).
        let kept: Vec<u32> = split_by(&mut keys, &offsets, &bounds)
            .into_par_iter()
            .zip(ranges())
            .flat_map_iter(|(chunk, lists)| {
                let base = offsets[lists.start];
                let mut mark = vec![u32::MAX; n];
                lists
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
            .zip(ranges())
            .for_each(|((ids, sims), lists)| {
                let mut at = 0;
                for i in lists {
                    for &key in &keys[offsets[i] as usize..][..kept[i] as usize] {
                        (sims[at], ids[at]) = unpack(key);
                        at += 1;
                    }
                }
            });
        Ok(Graph {
            offsets: new_offsets,
            ids,
            sims,
        })
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

    /// Hints the CPU to load where `i`'s list starts (and its cursor state)
    /// ahead of a walk reaching `i`.
    pub(crate) fn prefetch_list(&self, i: usize) {
        crate::prefetch::prefetch(&self.offsets[i]);
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
