//! The order in which the groups of the staged engine are laid: a chain of
//! centroids in which consecutive ones are similar, so that groups cut from
//! it hold lists that are neighbours of each other.

use crate::gemm::dot_rows;

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
