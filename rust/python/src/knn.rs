//! The kNN graph over an embedding matrix (see `tokenloom.knn`).

use numpy::{IntoPyArray, PyArray2, PyArrayMethods, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tokenloom_core::order::knn as core;

use crate::detach::run_detached;
use crate::progress::PyProgress;

type Graph<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>);

/// Neighbour ids (int64) and similarities (float32), both `[n, k]`, of each
/// row of a C-contiguous float32 `[n, d]` array, self excluded.
#[pyfunction]
#[pyo3(signature = (embeddings, k, exact = false, nlist = None, nprobe = None, train_size = None, seed = 0, progress = true))]
#[allow(clippy::too_many_arguments)]
pub fn knn_graph<'py>(
    py: Python<'py>,
    embeddings: PyReadonlyArray2<'py, f32>,
    k: usize,
    exact: bool,
    nlist: Option<usize>,
    nprobe: Option<usize>,
    train_size: Option<usize>,
    seed: u64,
    progress: bool,
) -> PyResult<Graph<'py>> {
    let shape = embeddings.as_array().dim();
    let emb = embeddings.as_slice().map_err(|_| {
        PyValueError::new_err(
            "embeddings must be a C-contiguous float32 array; pass numpy.ascontiguousarray(x, dtype=numpy.float32)",
        )
    })?;
    let (n, d) = shape;
    let params = core::IvfParams {
        nlist,
        nprobe,
        train_size,
        seed,
        ..core::IvfParams::default()
    };
    let bar = PyProgress::with_unit(progress, "");
    let result = run_detached(py, || {
        if exact {
            core::exact(emb, n, d, k, &bar)
        } else {
            core::approximate(emb, n, d, k, &params, &bar)
        }
    });
    if let Some(interrupt) = bar.take_interrupt() {
        return Err(interrupt);
    }
    let (ids, sims) = result?.into_parts();
    let ids: Vec<i64> = ids.into_iter().map(i64::from).collect();
    Ok((
        ids.into_pyarray(py).reshape([n, k])?,
        sims.into_pyarray(py).reshape([n, k])?,
    ))
}
