//! Placeholder brute-force kNN with the interface of the real module (replaced at merge).
#![allow(missing_docs)]
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::progress::Progress;

pub struct KnnGraph {
    pub n: usize,
    pub k: usize,
    pub neighbors: Vec<u32>,
    pub sims: Vec<f32>,
}

impl KnnGraph {
    pub fn neighbors(&self, i: usize) -> &[u32] {
        &self.neighbors[i * self.k..(i + 1) * self.k]
    }
    pub fn sims(&self, i: usize) -> &[f32] {
        &self.sims[i * self.k..(i + 1) * self.k]
    }
}

#[derive(Clone, Debug, Default)]
pub struct IvfParams {}

pub fn exact(emb: &[f32], n: usize, d: usize, k: usize, _p: &dyn Progress) -> Result<KnnGraph> {
    if k >= n {
        return Err(Error::invalid("k", "k >= n"));
    }
    let rows: Vec<(Vec<u32>, Vec<f32>)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let q = &emb[i * d..(i + 1) * d];
            let mut all: Vec<(f32, u32)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    (
                        q.iter()
                            .zip(&emb[j * d..(j + 1) * d])
                            .map(|(a, b)| a * b)
                            .sum(),
                        j as u32,
                    )
                })
                .collect();
            all.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            all.truncate(k);
            (
                all.iter().map(|x| x.1).collect(),
                all.iter().map(|x| x.0).collect(),
            )
        })
        .collect();
    Ok(KnnGraph {
        n,
        k,
        neighbors: rows.iter().flat_map(|r| r.0.clone()).collect(),
        sims: rows.iter().flat_map(|r| r.1.clone()).collect(),
    })
}

pub fn approximate(
    emb: &[f32],
    n: usize,
    d: usize,
    k: usize,
    _q: &IvfParams,
    p: &dyn Progress,
) -> Result<KnnGraph> {
    exact(emb, n, d, k, p)
}
