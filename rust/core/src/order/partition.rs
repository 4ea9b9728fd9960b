//! The order in which the groups of the staged engine are laid: a chain of
//! centroids in which consecutive ones are similar, so that groups cut from
//! it hold lists that are neighbours of each other.

use rayon::prelude::*;

use crate::gemm::dot_rows;

/// Centroids compared with the current one per task of a step.
const CHUNK: usize = 4096;

/// The similarities of centroid `at` to every centroid, into `sims`: one
/// row of the `[p, p]` matrix at a time, so that memory stays `O(p)` (at
/// 1 B documents the lists number about 63,000: the whole matrix would be
/// 16 GB).
fn row_of(centroids: &[f32], d: usize, at: usize, sims: &mut [f32]) {
    let one = &centroids[at * d..(at + 1) * d];
    sims.par_chunks_mut(CHUNK)
        .zip(centroids.par_chunks(CHUNK * d))
        .for_each_init(Vec::new, |prod, (out, rows)| {
            dot_rows(one, rows, d, prod);
            out.copy_from_slice(prod);
        });
}

/// An order of the parts (rows of `centroids`, `d` columns) in which
/// consecutive ones are similar: start at the part least similar to any
/// other (an end of the chain), then step to the most similar part not yet
/// visited; ties go to the smaller index. `O(p²·d)` time, `O(p)` memory.
pub fn chain(centroids: &[f32], d: usize) -> Vec<usize> {
    let p = centroids.len() / d.max(1);
    if p == 0 {
        return Vec::new();
    }
    let nearest = super::kmeans::nearest_centroids(centroids, d, 1);
    let dot = |a: usize, b: usize| -> f32 {
        let mut out = Vec::new();
        dot_rows(
            &centroids[a * d..(a + 1) * d],
            &centroids[b * d..(b + 1) * d],
            d,
            &mut out,
        );
        out.first().copied().unwrap_or(0.0)
    };
    let best_other = |i: usize| match nearest[i].first() {
        Some(&j) => dot(i, j as usize),
        None => f32::NEG_INFINITY,
    };
    let mut at = (0..p)
        .map(|i| (best_other(i), i))
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
        .map_or(0, |x| x.1);
    let mut seen = vec![false; p];
    let mut sims = vec![0f32; p];
    let mut out = Vec::with_capacity(p);
    loop {
        seen[at] = true;
        out.push(at);
        if out.len() == p {
            return out;
        }
        row_of(centroids, d, at, &mut sims);
        let next = (0..p)
            .filter(|&j| !seen[j])
            .max_by(|&a, &b| sims[a].total_cmp(&sims[b]).then(b.cmp(&a)));
        match next {
            Some(j) => at = j,
            None => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chain of points on a circle, given shuffled, walks around it from
    /// one end of the arc.
    #[test]
    fn a_chain_follows_neighbours() {
        let angles = [0.0f32, 0.5, 0.2, 1.05, 0.35, 0.8];
        let c: Vec<f32> = angles.iter().flat_map(|a| [a.cos(), a.sin()]).collect();
        assert_eq!(chain(&c, 2), vec![3, 5, 1, 4, 2, 0]);
        assert_eq!(chain(&c[..2], 2), vec![0]);
        assert!(chain(&[], 2).is_empty());
    }
}
