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
        for (e, &j) in self.ids.iter().enumerate() {
            let (i, r) = (e / self.k, e % self.k);
            if j == -1 {
                continue;
            }
            if j < 0 || j as u64 >= self.n as u64 {
                return Err(bad(format!(
                    "row {i}, rank {r} names document {j}, outside [0, {}); the kNN matrix must index this dataset's documents (-1 means no neighbour)",
                    self.n
                )));
            }
            if j as usize == i && !self.drop_self {
                return Err(bad(format!(
                    "row {i}, rank {r} names the document itself; drop the query column (faiss puts it first: knn[:, 1:]) or pass drop_self=True"
                )));
            }
            if let Some(s) = self.sims {
                if !s[e].is_finite() {
                    return Err(bad(format!("row {i}, rank {r} has similarity {}", s[e])));
                }
            }
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
    /// The undirected graph of `knn` (validated first). O(n·k·log k).
    pub fn from_knn(knn: &KnnLists<'_>) -> Result<Self> {
        knn.validate()?;
        let n = knn.n;
        let mut deg = vec![0u64; n + 1];
        for i in 0..n {
            for (j, _) in knn.row(i) {
                deg[i] += 1;
                deg[j as usize] += 1;
            }
        }
        let mut offsets = Vec::with_capacity(n + 1);
        let mut total = 0u64;
        for d in &deg[..n] {
            offsets.push(total);
            total += d;
        }
        offsets.push(total);
        // Each entry packed as (similarity descending, id ascending) in one u64, so that a
        // plain integer sort orders a list; lists are sorted in parallel.
        let mut fill = offsets.clone();
        let mut keys = vec![0u64; total as usize];
        for i in 0..n {
            for (j, s) in knn.row(i) {
                for (a, b) in [(i, j), (j as usize, i as u32)] {
                    keys[fill[a] as usize] = pack(s, b);
                    fill[a] += 1;
                }
            }
        }
        drop(fill);
        let mut lists: Vec<&mut [u64]> = Vec::with_capacity(n);
        let mut rest: &mut [u64] = &mut keys;
        for i in 0..n {
            let (head, tail) = rest.split_at_mut((offsets[i + 1] - offsets[i]) as usize);
            lists.push(head);
            rest = tail;
        }
        lists.par_iter_mut().for_each(|l| l.sort_unstable());
        drop(lists);
        // Keep each neighbour once (its highest similarity, which sorts first).
        let mut new_offsets = Vec::with_capacity(n + 1);
        let mut ids = Vec::with_capacity(keys.len());
        let mut sims = Vec::with_capacity(keys.len());
        let mut mark = vec![u32::MAX; n];
        for i in 0..n {
            new_offsets.push(ids.len() as u64);
            for &key in &keys[offsets[i] as usize..offsets[i + 1] as usize] {
                let (s, j) = unpack(key);
                if mark[j as usize] != i as u32 {
                    mark[j as usize] = i as u32;
                    ids.push(j);
                    sims.push(s);
                }
            }
        }
        new_offsets.push(ids.len() as u64);
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

    /// Similarities matching [`neighbors`](Self::neighbors).
    pub fn sims(&self, i: usize) -> &[f32] {
        &self.sims[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Similarity of the edge `(a, b)`, if there is one.
    pub fn edge(&self, a: usize, b: u32) -> Option<f32> {
        let at = self.neighbors(a).iter().position(|&j| j == b)?;
        Some(self.sims(a)[at])
    }
}
