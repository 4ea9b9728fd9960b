//! Coarse partitions, for ordering beyond one machine: spherical k-means over
//! the document vectors cuts the corpus into parts that are ordered
//! independently (one Ray task each, see [`super::join`]), and [`chain`]
//! lines the parts up so that consecutive parts are similar.
//!
//! k-means clusters of real corpora are uneven, and the slowest part sets the
//! pace, so the clusters are balanced: one under `min_size` documents joins
//! the cluster of its most similar centroid; then, while a cluster holds more
//! than `cap = max(⌈2n / parts⌉, 2·min_size)` documents, it is cut in two
//! halves at the median of its members' projection on the axis of a 2-means
//! split. Every part then holds between `min_size` and `cap` documents (when
//! there are at least `min_size`), at most about twice its fair share; the
//! number of parts may end up a little above or below the one asked for.

use crate::error::{Error, Result};
use crate::gemm::dot_rows;
use crate::progress::{NoProgress, Progress};
use crate::shuffle::{mix64, Permutation};

use super::kmeans;

/// Lloyd iterations of the coarse k-means.
const ITERATIONS: usize = 10;
/// Rows sampled to train the 2-means of a split.
const SPLIT_SAMPLE: usize = 4096;

/// Parts of a corpus: member documents (ascending ids) and unit centroids.
#[derive(Clone, Debug, PartialEq)]
pub struct Partitions {
    /// Documents of each part, by ascending id.
    pub members: Vec<Vec<u32>>,
    /// Row-major `[parts, dim]` unit centroids (mean directions of the members).
    pub centroids: Vec<f32>,
}

/// The rows `ids` of `v` (row-major, `d` columns) in that order.
fn gather(v: &[f32], d: usize, ids: impl Iterator<Item = usize>) -> Vec<f32> {
    ids.flat_map(|i| v[i * d..(i + 1) * d].iter().copied())
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Cuts the `active` rows of the unit vectors `v` into about `parts` parts of
/// similar documents, each of `min_size` documents or more (see the module
/// documentation). Deterministic for a seed.
pub fn partition(
    v: &[f32],
    d: usize,
    active: &[bool],
    parts: usize,
    min_size: usize,
    seed: u64,
    progress: &dyn Progress,
) -> Result<Partitions> {
    let rows: Vec<usize> = (0..active.len()).filter(|&i| active[i]).collect();
    let n = rows.len();
    if d == 0 || v.len() != active.len() * d {
        return Err(Error::invalid(
            "embeddings",
            format!(
                "expected [{}, d] with d >= 1, got {} values",
                active.len(),
                v.len()
            ),
        ));
    }
    if parts == 0 || parts > n {
        return Err(Error::invalid(
            "partitions",
            format!("{parts} partitions of {n} documents with content; use 1 to {n}"),
        ));
    }
    let perm = Permutation::new(n as u64, seed ^ 0x7061_7274);
    let train_rows = (64 * parts).max(10_000).min(n);
    let sample = gather(
        v,
        d,
        (0..train_rows as u64).map(|i| rows[perm.get(i) as usize]),
    );
    let centroids = kmeans::train(&sample, d, parts, ITERATIONS, seed, progress)?;
    drop(sample);
    progress.start("partitions: assigning documents", n as u64);
    let labels = if n == active.len() {
        kmeans::assign(v, d, &centroids, progress)?
    } else {
        kmeans::assign(&gather(v, d, rows.iter().copied()), d, &centroids, progress)?
    };
    progress.finish();
    let mut members: Vec<Vec<u32>> = kmeans::members(&labels, parts)
        .into_iter()
        .map(|m| m.into_iter().map(|r| rows[r as usize] as u32).collect())
        .filter(|m: &Vec<u32>| !m.is_empty())
        .collect();
    let mut cents: Vec<Vec<f32>> = members.iter().map(|m| centroid(v, d, m)).collect();
    merge_small(v, d, &mut members, &mut cents, min_size);
    let cap = n.div_ceil(parts).saturating_mul(2).max(2 * min_size);
    split_large(v, d, &mut members, &mut cents, cap, seed, progress)?;
    Ok(Partitions {
        members,
        centroids: cents.concat(),
    })
}

/// Mean direction of the rows `ids` (a zero vector if they cancel out).
fn centroid(v: &[f32], d: usize, ids: &[u32]) -> Vec<f32> {
    kmeans::mean_direction(v, d, ids).unwrap_or_else(|| vec![0.0; d])
}

/// Moves every cluster under `min_size` documents, smallest first, into the
/// cluster with the most similar centroid, until one cluster is left or none
/// is small.
fn merge_small(
    v: &[f32],
    d: usize,
    members: &mut Vec<Vec<u32>>,
    cents: &mut Vec<Vec<f32>>,
    min_size: usize,
) {
    while members.len() > 1 {
        let Some((s, _)) = members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.len() < min_size)
            .min_by_key(|(i, m)| (m.len(), *i))
        else {
            break;
        };
        let small = members.remove(s);
        let c = cents.remove(s);
        let mut best = 0;
        for (j, other) in cents.iter().enumerate() {
            if dot(&c, other) > dot(&c, &cents[best]) {
                best = j;
            }
        }
        members[best].extend(small);
        members[best].sort_unstable();
        cents[best] = centroid(v, d, &members[best]);
    }
}

/// Cuts the largest cluster in two halves while it holds more than `cap`
/// documents.
fn split_large(
    v: &[f32],
    d: usize,
    members: &mut Vec<Vec<u32>>,
    cents: &mut Vec<Vec<f32>>,
    cap: usize,
    seed: u64,
    progress: &dyn Progress,
) -> Result<()> {
    loop {
        progress.check()?;
        let Some((big, _)) = members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.len() > cap)
            .max_by_key(|(i, m)| (m.len(), usize::MAX - i))
        else {
            return Ok(());
        };
        let key = mix64(seed ^ mix64(members.len() as u64));
        let (a, b) = halves(v, d, &members[big], key)?;
        cents[big] = centroid(v, d, &a);
        members[big] = a;
        cents.push(centroid(v, d, &b));
        members.push(b);
    }
}

/// `ids` (at least 2) cut at the median of their projection on the axis
/// joining the two centroids of a 2-means of a sample of them; both halves by
/// ascending id.
fn halves(v: &[f32], d: usize, ids: &[u32], key: u64) -> Result<(Vec<u32>, Vec<u32>)> {
    let perm = Permutation::new(ids.len() as u64, key);
    let take = ids.len().min(SPLIT_SAMPLE) as u64;
    let sample = gather(v, d, (0..take).map(|i| ids[perm.get(i) as usize] as usize));
    let two = kmeans::train(&sample, d, 2, ITERATIONS, key, &NoProgress)?;
    let axis: Vec<f32> = two[..d].iter().zip(&two[d..]).map(|(a, b)| a - b).collect();
    let mut proj = Vec::new();
    dot_rows(
        &gather(v, d, ids.iter().map(|&i| i as usize)),
        &axis,
        d,
        &mut proj,
    );
    let mut ranked: Vec<(f32, u32)> = proj.into_iter().zip(ids.iter().copied()).collect();
    ranked.sort_unstable_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let (mut a, mut b): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
    let half = ranked.len() / 2;
    for (r, &(_, id)) in ranked.iter().enumerate() {
        if r < half {
            a.push(id)
        } else {
            b.push(id)
        }
    }
    a.sort_unstable();
    b.sort_unstable();
    Ok((a, b))
}

/// An order of the parts (rows of `centroids`, `d` columns) in which
/// consecutive ones are similar: start at the part least similar to any
/// other (an end of the chain), then step to the most similar part not yet
/// visited; ties go to the smaller index.
pub fn chain(centroids: &[f32], d: usize) -> Vec<usize> {
    let p = centroids.len() / d.max(1);
    if p == 0 {
        return Vec::new();
    }
    let mut sims = Vec::new();
    dot_rows(centroids, centroids, d, &mut sims);
    let row = |i: usize| &sims[i * p..(i + 1) * p];
    let best_other = |i: usize| {
        row(i)
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, &s)| s)
            .fold(f32::NEG_INFINITY, f32::max)
    };
    let mut at = (0..p)
        .min_by(|&a, &b| best_other(a).total_cmp(&best_other(b)).then(a.cmp(&b)))
        .unwrap_or(0);
    let mut seen = vec![false; p];
    let mut out = Vec::with_capacity(p);
    loop {
        seen[at] = true;
        out.push(at);
        let next = (0..p)
            .filter(|&j| !seen[j])
            .max_by(|&a, &b| row(at)[a].total_cmp(&row(at)[b]).then(b.cmp(&a)));
        match next {
            Some(j) => at = j,
            None => return out,
        }
    }
}
