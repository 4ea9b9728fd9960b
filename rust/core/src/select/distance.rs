//! Euclidean distances between sketch rows, through one matrix product:
//! `|a - b|² = |a|² + |b|² - 2 a·b`.

/// Sum over the rows `b` of `others` of `|a - b|` for every row `a` of
/// `rows` (both row-major with `dim` columns), accumulated in f64.
pub fn distance_sums(rows: &[f32], others: &[f32], dim: usize) -> Vec<f64> {
    let dists = distances(rows, others, dim);
    let m = others.len().checked_div(dim).unwrap_or(0);
    if m == 0 {
        return vec![0.0; rows.len().checked_div(dim).unwrap_or(0)];
    }
    dists
        .chunks_exact(m)
        .map(|r| r.iter().map(|&d| d as f64).sum())
        .collect()
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
    crate::gemm::dot_rows(rows, others, dim, &mut dots);
    let sq = |r: &[f32]| r.iter().map(|&x| x as f64 * x as f64).sum::<f64>();
    let a: Vec<f64> = rows.chunks_exact(dim).map(sq).collect();
    let b: Vec<f64> = others.chunks_exact(dim).map(sq).collect();
    for (i, row) in dots.chunks_exact_mut(m.max(1)).enumerate().take(n) {
        for (j, d) in row.iter_mut().enumerate() {
            *d = (a[i] + b[j] - 2.0 * *d as f64).max(0.0).sqrt() as f32;
        }
    }
    dots
}
