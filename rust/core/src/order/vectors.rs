//! The document vectors ordering works on: the built-in embeddings, or the
//! given ones checked and scaled to unit length; which documents take part
//! in the kNN graph; and the kNN lists of those documents.

use super::{embed, knn, Input, OrderParams};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::shard::Dataset;

/// Unit-length vectors of the documents of `ds`, row-major `[num_docs, dim]`,
/// with the dimension: built-in embeddings (zero rows for documents without
/// features) or the given ones checked and normalised. `None` for a kNN
/// matrix, which comes without vectors.
pub fn document_vectors(
    ds: &Dataset,
    params: &OrderParams,
    input: Input<'_>,
    progress: &dyn Progress,
) -> Result<Option<(Vec<f32>, usize)>> {
    Ok(match input {
        Input::Builtin => Some((
            embed::embed_dataset(ds, &params.embed, progress)?,
            params.embed.dim,
        )),
        Input::Embeddings { data, dim } => {
            Some((normalized(data, dim, ds.num_docs() as usize)?, dim))
        }
        Input::Knn(_) => None,
    })
}

/// Which documents take part in the graph (non-empty, with a non-zero
/// vector), and the non-empty ones without features (a zero vector), which
/// go after the path.
pub fn participants(lengths: &[u64], vectors: Option<(&[f32], usize)>) -> (Vec<bool>, Vec<u32>) {
    let has_vector = |i: usize| match vectors {
        Some((v, d)) => v[i * d..(i + 1) * d].iter().any(|&x| x != 0.0),
        None => true,
    };
    let n = lengths.len();
    let featureless: Vec<u32> = (0..n)
        .filter(|&i| lengths[i] > 0 && !has_vector(i))
        .map(|i| i as u32)
        .collect();
    let active = (0..n).map(|i| lengths[i] > 0 && has_vector(i)).collect();
    (active, featureless)
}

/// Checks `[n, dim]` embeddings (finite, no zero rows) and returns them at
/// unit length.
pub(super) fn normalized(data: &[f32], dim: usize, n: usize) -> Result<Vec<f32>> {
    let bad = |what: String| Error::invalid("embeddings", what);
    if dim == 0 || data.len() != n * dim {
        return Err(bad(format!(
            "expected [{n}, d] (one row per document of the dataset), got {} values with d = {dim}",
            data.len()
        )));
    }
    let mut out = data.to_vec();
    for (i, row) in out.chunks_exact_mut(dim).enumerate() {
        if let Some(j) = row.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!("row {i} has {} at column {j}", row[j])));
        }
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm == 0.0 {
            return Err(bad(format!(
                "row {i} is all zeros; every document needs a non-zero embedding"
            )));
        }
        row.iter_mut().for_each(|x| *x /= norm);
    }
    Ok(out)
}

/// Checks that `[n, dim]` vectors are what [`document_vectors`] returns:
/// finite, every row of unit length or (with `zero_rows`) all zeros.
pub(super) fn check_unit(data: &[f32], dim: usize, n: usize, zero_rows: bool) -> Result<()> {
    let bad = |what: String| Error::invalid("embeddings", what);
    if dim == 0 || data.len() != n * dim {
        return Err(bad(format!(
            "expected [{n}, d] with d >= 1, got {} values with d = {dim}",
            data.len()
        )));
    }
    for (i, row) in data.chunks_exact(dim).enumerate() {
        let norm = row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        let zero = zero_rows && row.iter().all(|&x| x == 0.0);
        let unit = (norm - 1.0).abs() < 1e-3; // false for NaN
        if !zero && !unit {
            return Err(bad(format!(
                "row {i} has length {norm}; pass the unit vectors that order_embeddings returns"
            )));
        }
    }
    Ok(())
}

/// kNN over the active rows of `v`, as `[n, k]` ids into `v` (-1 for
/// inactive rows) and similarities, with whether the search was exact
/// (`params.exact`, by default below [`knn::EXACT_BELOW`] active rows).
pub(super) fn neighbours(
    v: &[f32],
    d: usize,
    active: &[bool],
    params: &OrderParams,
    progress: &dyn Progress,
) -> Result<(Vec<i64>, Vec<f32>, bool)> {
    let k = params.k;
    let rows: Vec<usize> = (0..active.len()).filter(|&i| active[i]).collect();
    if k == 0 || k >= rows.len() {
        return Err(Error::invalid(
            "k",
            format!(
                "{k} neighbours need more than {k} documents with content; this dataset has {}",
                rows.len()
            ),
        ));
    }
    let exact = params.exact.unwrap_or(rows.len() < knn::EXACT_BELOW);
    let compact;
    let data: &[f32] = if rows.len() == active.len() {
        v
    } else {
        compact = rows
            .iter()
            .flat_map(|&i| v[i * d..(i + 1) * d].iter().copied())
            .collect::<Vec<f32>>();
        &compact
    };
    let g = if exact {
        knn::exact(data, rows.len(), d, k, progress)?
    } else {
        let ivf = knn::IvfParams {
            seed: params.seed,
            exact_below: 0,
            ..knn::IvfParams::default()
        };
        knn::approximate(data, rows.len(), d, k, &ivf, progress)?
    };
    let n = active.len();
    let mut ids = vec![-1i64; n * k];
    let mut sims = vec![0f32; n * k];
    for (r, &i) in rows.iter().enumerate() {
        for (c, (&j, &s)) in g.neighbors(r).iter().zip(g.sims(r)).enumerate() {
            ids[i * k + c] = rows[j as usize] as i64;
            sims[i * k + c] = s;
        }
    }
    Ok((ids, sims, exact))
}
