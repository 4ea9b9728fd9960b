//! Spherical k-means (Lloyd iterations with centroids renormalised to unit
//! length, so assignment is by largest inner product) and the blocked
//! nearest-centroid assignment it rests on. Deterministic for a given
//! input: assignments are independent per row and centroid sums run in
//! row order within each cluster, whatever the number of threads.

use rayon::prelude::*;

use crate::error::Result;
use crate::gemm::dot_rows;
use crate::progress::Progress;
use crate::shuffle::mix64;

use super::topk::TopK;

/// Rows assigned per matrix product.
const ROWS: usize = 1024;

/// Index of the largest entry of `row` (the first one on ties).
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (j, &s) in row.iter().enumerate() {
        if s > row[best] {
            best = j;
        }
    }
    best as u32
}

/// For every row of `rows` (row-major, `d` columns), the index of the
/// centroid with the largest inner product. `progress` advances by rows.
pub(super) fn assign(
    rows: &[f32],
    d: usize,
    centroids: &[f32],
    progress: &dyn Progress,
) -> Result<Vec<u32>> {
    let n = rows.len() / d.max(1);
    let mut out = vec![0u32; n];
    if d == 0 {
        return Ok(out);
    }
    rows.par_chunks(ROWS * d)
        .zip(out.par_chunks_mut(ROWS))
        .try_for_each_init(Vec::new, |prod, (chunk, labels)| -> Result<()> {
            progress.check()?;
            dot_rows(chunk, centroids, d, prod);
            let c = centroids.len() / d;
            for (label, sims) in labels.iter_mut().zip(prod.chunks_exact(c.max(1))) {
                *label = argmax(sims);
            }
            progress.advance(labels.len() as u64);
            Ok(())
        })?;
    Ok(out)
}

/// Member rows of each of `nlist` clusters, in row order.
pub(super) fn members(labels: &[u32], nlist: usize) -> Vec<Vec<u32>> {
    let mut lists = vec![Vec::new(); nlist];
    for (i, &l) in labels.iter().enumerate() {
        if let Some(list) = lists.get_mut(l as usize) {
            list.push(i as u32);
        }
    }
    lists
}

/// The normalised sum of the member rows, or `None` if it is zero.
pub(super) fn mean_direction(rows: &[f32], d: usize, ids: &[u32]) -> Option<Vec<f32>> {
    let mut sum = vec![0f64; d];
    for &i in ids {
        let at = i as usize * d;
        for (s, &x) in sum.iter_mut().zip(rows.get(at..at + d)?) {
            *s += x as f64;
        }
    }
    let norm = sum.iter().map(|s| s * s).sum::<f64>().sqrt();
    (norm > 0.0 && norm.is_finite()).then(|| sum.iter().map(|&s| (s / norm) as f32).collect())
}

/// Scales `v` to unit length (left alone if it is zero).
fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
    }
}

/// `nlist` unit centroids of the rows of `train` (row-major, `d` columns,
/// at least `nlist` rows, in random order: the first `nlist` rows seed the
/// centroids) after `iterations` Lloyd steps. An emptied cluster takes half
/// of the largest one: both centroids are pushed apart along a seeded
/// direction, as in faiss.
pub(super) fn train(
    train: &[f32],
    d: usize,
    nlist: usize,
    iterations: usize,
    seed: u64,
    progress: &dyn Progress,
) -> Result<Vec<f32>> {
    let mut centroids: Vec<f32> = train.get(..nlist * d).unwrap_or(train).to_vec();
    let rows = train.len() / d.max(1);
    progress.start("kNN: k-means", (iterations * rows) as u64);
    for it in 0..iterations {
        let labels = assign(train, d, &centroids, progress)?;
        let lists = members(&labels, nlist);
        let means: Vec<Option<Vec<f32>>> = lists
            .par_iter()
            .map(|ids| mean_direction(train, d, ids))
            .collect();
        let mut sizes: Vec<usize> = lists.iter().map(Vec::len).collect();
        for (c, mean) in means.iter().enumerate() {
            if let (Some(mean), Some(dst)) = (mean, centroids.get_mut(c * d..(c + 1) * d)) {
                dst.copy_from_slice(mean);
            } else if let Some(sz) = sizes.get_mut(c) {
                *sz = 0;
            }
        }
        for empty in 0..nlist {
            if sizes.get(empty) != Some(&0) {
                continue;
            }
            let (big, &big_size) = sizes
                .iter()
                .enumerate()
                .max_by(|x, y| x.1.cmp(y.1).then(y.0.cmp(&x.0)))
                .unwrap_or((0, &0));
            if big_size < 2 {
                break;
            }
            split(
                &mut centroids,
                d,
                big,
                empty,
                mix64(seed ^ mix64((it * nlist + empty) as u64)),
            );
            sizes[empty] = big_size / 2;
            sizes[big] = big_size - big_size / 2;
        }
    }
    progress.finish();
    Ok(centroids)
}

/// Moves centroid `to` next to centroid `from` and pushes the two apart
/// along a direction drawn from `key`.
fn split(centroids: &mut [f32], d: usize, from: usize, to: usize, key: u64) {
    let source: Vec<f32> = centroids
        .get(from * d..(from + 1) * d)
        .unwrap_or(&[])
        .to_vec();
    let eps = 1.0 / 1024.0;
    for (sign, c) in [(1.0, to), (-1.0, from)] {
        if let Some(dst) = centroids.get_mut(c * d..(c + 1) * d) {
            for (j, (x, &s)) in dst.iter_mut().zip(&source).enumerate() {
                let r = if mix64(key ^ j as u64) & 1 == 0 {
                    eps
                } else {
                    -eps
                };
                *x = s * (1.0 + sign * r);
            }
            normalise(dst);
        }
    }
}

/// For each of the `c` centroids, the `m` most similar other centroids,
/// most similar first.
pub(super) fn nearest_centroids(centroids: &[f32], d: usize, m: usize) -> Vec<Vec<u32>> {
    let c = centroids.len() / d.max(1);
    let ids: Vec<u32> = (0..c as u32).collect();
    centroids
        .par_chunks(ROWS * d.max(1))
        .enumerate()
        .flat_map_iter(|(chunk_at, chunk)| {
            let mut prod = Vec::new();
            dot_rows(chunk, centroids, d, &mut prod);
            let rows = chunk.len() / d.max(1);
            let mut top = TopK::new(rows, m.min(c.saturating_sub(1)));
            for (r, sims) in prod.chunks_exact(c.max(1)).enumerate() {
                top.offer_row(r, (chunk_at * ROWS + r) as u32, sims, &ids);
            }
            (0..rows).map(move |r| top.row(r).0.to_vec())
        })
        .collect()
}
