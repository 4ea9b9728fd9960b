//! Greedy maximum-TSP traversal of the document graph (In-Context
//! Pretraining, Algorithm 1): start at an unvisited document of minimum
//! degree, move to its most similar unvisited neighbour, and restart at the
//! next minimum-degree document when stuck. O(n·k): every adjacency list is
//! scanned once, when the walk leaves its document, and the start queue is
//! one sorted list walked once.
//!
//! The public reference script's variant is offered too
//! ([`traverse_reference`]): start at the lowest unvisited id, look at the
//! first `k_traverse` directed neighbours only, cap segments at
//! `max_segment` documents, then dissolve segments shorter than `min_segment`
//! by moving each of their documents in front of its first neighbour that
//! lies in another segment (left in place when there is none, where the
//! script would crash).

use rayon::prelude::*;

use super::graph::{Graph, KnnLists};
use crate::prefetch::prefetch;
use crate::shuffle::mix64;

/// A traversal: documents in order, cut into segments at each restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Path {
    /// Document ids, each active document exactly once.
    pub docs: Vec<u32>,
    /// Start of each segment in `docs`, plus `docs.len()` at the end.
    pub segment_starts: Vec<u64>,
}

impl Path {
    /// Number of segments (restarts + 1, or 0 when empty).
    pub fn num_segments(&self) -> usize {
        self.segment_starts.len().saturating_sub(1)
    }
}

/// The paper's traversal over the undirected graph, visiting only `active`
/// documents. Ties in degree are broken by a seeded hash of the id; with
/// `max_segment` (0: none) a segment is cut after that many documents.
pub fn traverse(graph: &Graph, active: &[bool], seed: u64, max_segment: usize) -> Path {
    let n = graph.len();
    let degree = |i: usize| {
        graph
            .neighbors(i)
            .iter()
            .filter(|&&j| active[j as usize])
            .count()
    };
    // Start queue: (degree, seeded hash) packed in one key, ties by id.
    let mut starts: Vec<(u64, u32)> = (0..n)
        .into_par_iter()
        .filter(|&i| active[i])
        .map(|i| {
            let deg = (degree(i) as u64).min((1 << 23) - 1);
            (
                (deg << 40) | (mix64(seed ^ mix64(i as u64)) >> 24),
                i as u32,
            )
        })
        .collect();
    starts.par_sort_unstable();
    let mut visited: Vec<bool> = active.iter().map(|a| !a).collect();
    let mut docs = Vec::with_capacity(starts.len());
    let mut segment_starts = vec![0u64];
    for &(_, s) in &starts {
        if visited[s as usize] {
            continue;
        }
        let mut d = s as usize;
        let mut len = 0usize;
        loop {
            visited[d] = true;
            docs.push(d as u32);
            len += 1;
            if max_segment > 0 && len >= max_segment {
                break;
            }
            let nb = graph.neighbors(d);
            // Each document is walked from once, so its list is scanned once.
            let mut c = 0;
            while c < nb.len() && visited[nb[c] as usize] {
                c += 1;
            }
            // The next few candidates are likely visited soon: start loading their lists.
            for &j in nb.iter().skip(c).take(8) {
                graph.prefetch_list(j as usize);
            }
            match nb.get(c) {
                Some(&next) => d = next as usize,
                None => break,
            }
        }
        segment_starts.push(docs.len() as u64);
    }
    Path {
        docs,
        segment_starts,
    }
}

/// Settings of the reference script's traversal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReferenceParams {
    /// Neighbours looked at per step (the script: ranks 1..9 of a list that
    /// starts with the document itself, so 9).
    pub k_traverse: usize,
    /// Segment cap in documents (the script: 21).
    pub max_segment: usize,
    /// Segments shorter than this are dissolved (the script: 21; 0: off).
    pub min_segment: usize,
}

impl Default for ReferenceParams {
    fn default() -> Self {
        ReferenceParams {
            k_traverse: super::defaults::REFERENCE_K_TRAVERSE,
            max_segment: super::defaults::REFERENCE_SEGMENT,
            min_segment: super::defaults::REFERENCE_SEGMENT,
        }
    }
}

impl ReferenceParams {
    /// The reference settings with a segment cap of `max_segment` (0: the
    /// script's).
    pub fn with_max_segment(max_segment: usize) -> Self {
        let d = ReferenceParams::default();
        ReferenceParams {
            max_segment: if max_segment == 0 {
                d.max_segment
            } else {
                max_segment
            },
            ..d
        }
    }
}

/// The public script's traversal and merge over directed lists.
pub fn traverse_reference(knn: &KnnLists<'_>, active: &[bool], p: &ReferenceParams) -> Path {
    const OPEN: u8 = 0;
    const DONE: u8 = 1;
    const OUT: u8 = 2;
    let (n, k) = (knn.n, knn.k);
    // One state byte per document: unvisited, visited, or not in the order.
    let mut state: Vec<u8> = active.iter().map(|&a| if a { OPEN } else { OUT }).collect();
    let mut path = Path {
        docs: Vec::with_capacity(active.iter().filter(|&&a| a).count()),
        segment_starts: vec![0],
    };
    let cap = p.max_segment.max(1);
    let mut lowest = 0usize;
    loop {
        while lowest < n && state[lowest] != OPEN {
            lowest += 1;
        }
        if lowest == n {
            break;
        }
        let (mut d, mut len) = (lowest, 0usize);
        loop {
            state[d] = DONE;
            path.docs.push(d as u32);
            len += 1;
            if len >= cap {
                break;
            }
            let row = &knn.ids[d * k..(d + 1) * k];
            // The walk is likely to visit these soon: start loading their rows now.
            for &j in row {
                if j >= 0 && (j as usize) < n {
                    prefetch(&knn.ids[j as usize * k]);
                }
            }
            // The first open document among the first k_traverse valid, present entries.
            let (mut looked, mut next) = (0usize, None);
            for &j in row {
                if j < 0 || j as usize == d || state[j as usize] == OUT {
                    continue;
                }
                if looked == p.k_traverse {
                    break;
                }
                looked += 1;
                if state[j as usize] == OPEN {
                    next = Some(j as usize);
                    break;
                }
            }
            match next {
                Some(j) => d = j,
                None => break,
            }
        }
        path.segment_starts.push(path.docs.len() as u64);
    }
    if p.min_segment > 1 {
        merge_short(knn, active, &mut path, p);
    }
    path
}

/// Dissolves short segments into their documents' neighbours' segments,
/// each moved document inserted just before that neighbour. A linked list
/// over documents keeps every insertion O(1).
fn merge_short(knn: &KnnLists<'_>, active: &[bool], path: &mut Path, p: &ReferenceParams) {
    const NIL: u32 = u32::MAX;
    let segments = path.num_segments();
    let n = knn.n;
    let mut seg_of = vec![NIL; n];
    let mut next = vec![NIL; n];
    let mut prev = vec![NIL; n];
    let mut heads = Vec::with_capacity(segments);
    for (s, b) in path.segment_starts.windows(2).enumerate() {
        let seg = &path.docs[b[0] as usize..b[1] as usize];
        heads.push(seg[0]);
        for (w, &d) in seg.iter().enumerate() {
            seg_of[d as usize] = s as u32;
            prev[d as usize] = if w > 0 { seg[w - 1] } else { NIL };
            next[d as usize] = seg.get(w + 1).copied().unwrap_or(NIL);
        }
    }
    let mut alive = vec![true; segments];
    let mut size: Vec<u64> = path
        .segment_starts
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    let mut changed = vec![false; segments];
    let mut members = Vec::new();
    for s in 0..segments {
        if size[s] >= p.min_segment as u64 {
            continue;
        }
        // Its members now: earlier short segments may have moved documents in.
        members.clear();
        let mut d = heads[s];
        while d != NIL {
            members.push(d);
            d = next[d as usize];
        }
        for &d in &members {
            prefetch(&knn.ids[d as usize * knn.k]);
        }
        let mut stayed = false;
        for &d in &members {
            let target = knn
                .row_ids(d as usize)
                .filter(|&j| active[j as usize])
                .take(p.k_traverse)
                .find(|&j| seg_of[j as usize] != s as u32 && alive[seg_of[j as usize] as usize]);
            let Some(t) = target else {
                stayed = true;
                continue;
            };
            let (ts, du, tu) = (seg_of[t as usize], d as usize, t as usize);
            // Unlink d from its own segment, then insert it before t.
            if prev[du] != NIL {
                next[prev[du] as usize] = next[du];
            } else if heads[s] == d {
                heads[s] = next[du];
            }
            if next[du] != NIL {
                prev[next[du] as usize] = prev[du];
            }
            prev[du] = prev[tu];
            next[du] = t;
            if prev[tu] != NIL {
                next[prev[tu] as usize] = d;
            } else {
                heads[ts as usize] = d;
            }
            prev[tu] = d;
            seg_of[du] = ts;
            size[s] -= 1;
            size[ts as usize] += 1;
            changed[s] = true;
            changed[ts as usize] = true;
        }
        alive[s] = stayed;
    }
    // Segments that neither lost nor gained a document are copied as they were.
    let mut out = Path {
        docs: Vec::with_capacity(path.docs.len()),
        segment_starts: vec![0],
    };
    for s in (0..segments).filter(|&s| alive[s]) {
        if changed[s] {
            let mut d = heads[s];
            while d != NIL {
                out.docs.push(d);
                d = next[d as usize];
            }
        } else {
            out.docs.extend_from_slice(
                &path.docs[path.segment_starts[s] as usize..path.segment_starts[s + 1] as usize],
            );
        }
        out.segment_starts.push(out.docs.len() as u64);
    }
    *path = out;
}
