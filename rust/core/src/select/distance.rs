//! Euclidean distances between sketch rows, through matrix products:
//! `|a - b|² = |a|² + |b|² - 2 a·b`, the squared norms taken in f64.

use rayon::prelude::*;

use crate::gemm::dot_rows;

/// Rows of `others` per task of [`sums_with_norms`]: a 1,024-row memory
/// makes two tasks, one per core on two cores (four 256-row tasks were
/// 8 % slower there: each product call packs the candidates again).
const ROWS: usize = 512;

/// `|row|²` in f64 (eight partial sums, so the loop vectorizes).
pub(crate) fn sq_norm(row: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = row.chunks_exact(8);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| x as f64 * x as f64)
        .sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x as f64 * x as f64;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// [`sq_norm`] of each `dim`-float row of `rows`.
pub(crate) fn sq_norms(rows: &[f32], dim: usize) -> Vec<f64> {
    if dim == 0 {
        return Vec::new();
    }
    rows.chunks_exact(dim).map(sq_norm).collect()
}

/// Memory reused by [`sums_with_norms`] from call to call, one per task.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scratch {
    tasks: Vec<Task>,
}

/// One task's product block and partial sums.
#[derive(Clone, Debug, Default)]
struct Task {
    prod: Vec<f32>,
    part: Vec<f64>,
}

/// Rows of a matrix, row-major, with their squared norms.
type Rows<'a> = (&'a [f32], &'a [f64]);

impl Task {
    /// `part[i] = Σ_j |rows_i - block_j|`.
    fn run(&mut self, (rows, row_norms): Rows<'_>, (block, norms): Rows<'_>, dim: usize) {
        dot_rows(block, rows, dim, &mut self.prod);
        self.part.clear();
        self.part.resize(row_norms.len(), 0.0);
        for (dots, &b2) in self.prod.chunks_exact(row_norms.len()).zip(norms) {
            for ((s, &ab), &a2) in self.part.iter_mut().zip(dots).zip(row_norms) {
                *s += (a2 + b2 - 2.0 * ab as f64).max(0.0).sqrt();
            }
        }
    }
}

/// Sets `out[i]` to `Σ_j |rows_i - others_j|` (f64), given the squared norms
/// of the rows of both (`dim` floats a row). The rows of `others` are split
/// into fixed blocks spread over the rayon pool; the partial sums are added
/// in block order, so the result does not depend on the number of threads.
pub(crate) fn sums_with_norms(
    rows: Rows<'_>,
    (others, other_norms): Rows<'_>,
    dim: usize,
    scratch: &mut Scratch,
    out: &mut Vec<f64>,
) {
    let (n, m) = (rows.1.len(), other_norms.len());
    out.clear();
    out.resize(n, 0.0);
    if n == 0 || m == 0 || dim == 0 {
        return;
    }
    let blocks = m.div_ceil(ROWS);
    scratch.tasks.resize_with(blocks, Task::default);
    let tasks = &mut scratch.tasks[..blocks];
    if blocks == 1 {
        tasks[0].run(rows, (others, other_norms), dim);
    } else {
        tasks
            .par_iter_mut()
            .zip(others.par_chunks(ROWS * dim))
            .zip(other_norms.par_chunks(ROWS))
            .for_each(|((task, block), norms)| task.run(rows, (block, norms), dim));
    }
    for task in tasks.iter() {
        for (o, p) in out.iter_mut().zip(&task.part) {
            *o += p;
        }
    }
}

/// Sum over the rows `b` of `others` of `|a - b|` for every row `a` of
/// `rows` (both row-major with `dim` columns), accumulated in f64.
pub fn distance_sums(rows: &[f32], others: &[f32], dim: usize) -> Vec<f64> {
    if dim == 0 {
        return Vec::new();
    }
    assert_eq!(rows.len() % dim, 0, "rows are whole");
    assert_eq!(others.len() % dim, 0, "rows are whole");
    let (a, b) = (sq_norms(rows, dim), sq_norms(others, dim));
    let mut out = Vec::new();
    sums_with_norms(
        (rows, &a),
        (others, &b),
        dim,
        &mut Scratch::default(),
        &mut out,
    );
    out
}

/// `[n, m]` row-major distances between the `n` rows of `rows` and the `m`
/// rows of `others`.
pub fn distances(rows: &[f32], others: &[f32], dim: usize) -> Vec<f32> {
    if dim == 0 {
        return Vec::new();
    }
    let (n, m) = (rows.len() / dim, others.len() / dim);
    assert_eq!(rows.len(), n * dim, "rows are whole");
    assert_eq!(others.len(), m * dim, "rows are whole");
    let mut dots = Vec::new();
    dot_rows(rows, others, dim, &mut dots);
    let (a, b) = (sq_norms(rows, dim), sq_norms(others, dim));
    for (row, &a2) in dots.chunks_exact_mut(m.max(1)).zip(&a) {
        for (d, &b2) in row.iter_mut().zip(&b) {
            *d = (a2 + b2 - 2.0 * *d as f64).max(0.0).sqrt() as f32;
        }
    }
    dots
}
