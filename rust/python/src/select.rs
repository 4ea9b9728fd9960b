//! Online batch selection: the selector's memory and rules live in the core;
//! utilities and sketches arrive as numpy arrays.

use std::borrow::Cow;
use std::sync::Mutex;

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokenloom_core::select::{
    Rule, Running, Selector, SelectorConfig, SelectorState, SketchBuffer, DEFAULT_CALIBRATION,
};

use crate::detach::run_detached;
use crate::errors::to_py;

/// An online selector (see `tokenloom.BatchSelector` for the user API).
#[pyclass(name = "Selector", module = "tokenloom._core", frozen)]
pub struct PySelector {
    inner: Mutex<Selector>,
}

impl PySelector {
    /// The selector, waited for without the GIL: another thread may hold the
    /// lock across a GIL release (a selection, or a garbage collection while
    /// it reads the state), so waiting with the GIL held could deadlock.
    fn lock(&self, py: Python<'_>) -> PyResult<std::sync::MutexGuard<'_, Selector>> {
        crate::detach::lock(py, &self.inner, "selector")
    }
}

#[pymethods]
impl PySelector {
    #[new]
    #[pyo3(signature = (rule, keep, buffer_size, dim, alpha, seed, state = None, calibration = DEFAULT_CALIBRATION))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        rule: &str,
        keep: usize,
        buffer_size: usize,
        dim: usize,
        alpha: f64,
        seed: u64,
        state: Option<&Bound<'_, PyDict>>,
        calibration: usize,
    ) -> PyResult<Self> {
        let cfg = SelectorConfig {
            rule: to_py(Rule::parse(rule))?,
            keep,
            buffer_size,
            dim,
            alpha,
            seed,
            calibration,
        };
        let sel = match state {
            None => to_py(Selector::new(cfg))?,
            Some(d) => to_py(Selector::restore(cfg, state_from_dict(d, cfg)?))?,
        };
        Ok(PySelector {
            inner: Mutex::new(sel),
        })
    }

    /// Indices of the kept candidates, best first; remembers their sketches.
    fn select<'py>(
        &self,
        py: Python<'py>,
        utility: PyReadonlyArray1<'py, f32>,
        sketches: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let u = utility
            .as_slice()
            .map_or_else(|_| utility.as_array().to_vec(), <[f32]>::to_vec);
        let dim = self.lock(py)?.config().dim;
        let shape = sketches.as_array().shape().to_vec();
        if shape[0] != 0 && (shape[0] != u.len() || shape[1] != dim) {
            return Err(PyValueError::new_err(format!(
                "sketches have shape {shape:?} but {} candidates of {dim} floats were expected",
                u.len()
            )));
        }
        // A contiguous array (the common case) is read in place, with the GIL
        // released as numpy's own routines do; another layout is copied.
        let z: Cow<'_, [f32]> = match sketches.as_slice() {
            Ok(rows) => Cow::Borrowed(rows),
            Err(_) => Cow::Owned(sketches.as_array().iter().copied().collect()),
        };
        let mut guard = self.lock(py)?;
        let sel = &mut *guard;
        let kept = run_detached(py, || sel.select(&u, &z))?;
        Ok(kept
            .into_iter()
            .map(|i| i as i64)
            .collect::<Vec<_>>()
            .into_pyarray(py))
    }

    /// The diversity weight in use (calibrated for `uds-auto`).
    fn effective_alpha(&self, py: Python<'_>) -> PyResult<f64> {
        Ok(self.lock(py)?.effective_alpha())
    }

    /// Raises unless a run of `batches` candidate batches completes the
    /// rule's calibration window.
    fn check_run(&self, py: Python<'_>, batches: u64) -> PyResult<()> {
        to_py(self.lock(py)?.check_run(batches))
    }

    /// The memory, running statistics and step counter, as plain values.
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let guard = self.lock(py)?;
        let st = guard.state();
        let (rows, next, count) = st.buffer.parts();
        let d = PyDict::new(py);
        d.set_item("rows", rows.to_vec().into_pyarray(py))?;
        d.set_item("next", next)?;
        d.set_item("count", count)?;
        let stats: Vec<(u64, f64, f64)> = st.stats.iter().map(|r| (r.n, r.mean, r.m2)).collect();
        d.set_item("stats", stats)?;
        d.set_item("steps", st.steps)?;
        Ok(d)
    }
}

fn state_from_dict(d: &Bound<'_, PyDict>, cfg: SelectorConfig) -> PyResult<SelectorState> {
    let get = |k: &str| {
        d.get_item(k)?
            .ok_or_else(|| PyValueError::new_err(format!("the selector state lacks {k:?}")))
    };
    let rows: PyReadonlyArray1<'_, f32> = get("rows")?.extract()?;
    let stats: Vec<(u64, f64, f64)> = get("stats")?.extract()?;
    if stats.len() != 2 {
        return Err(PyValueError::new_err(
            "the selector state's stats must hold two entries",
        ));
    }
    let running = |i: usize| Running {
        n: stats[i].0,
        mean: stats[i].1,
        m2: stats[i].2,
    };
    Ok(SelectorState {
        buffer: to_py(SketchBuffer::from_parts(
            cfg.buffer_size,
            cfg.dim,
            rows.as_array().to_vec(),
            get("next")?.extract()?,
            get("count")?.extract()?,
        ))?,
        stats: [running(0), running(1)],
        steps: get("steps")?.extract()?,
    })
}

/// The default diversity weight of `rule` (defined in the core).
#[pyfunction]
pub fn default_alpha(rule: &str) -> PyResult<f64> {
    Ok(to_py(Rule::parse(rule))?.default_alpha())
}
