//! Progress for long jobs called from Python: a tqdm bar when tqdm is
//! installed, and Ctrl-C turned into cancellation. Attaches to the
//! interpreter at most every 100 ms.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tokenloom_core::Progress;

const TICK: Duration = Duration::from_millis(100);

/// Progress sink bound to the calling Python thread.
pub struct PyProgress {
    show: bool,
    unit: &'static str,
    bar: Mutex<Option<Py<PyAny>>>,
    last: Mutex<Instant>,
    pending: AtomicU64,
    cancelled: AtomicBool,
    interrupt: Mutex<Option<PyErr>>,
}

impl PyProgress {
    /// A sink that draws a bar of bytes if `show` and tqdm is importable.
    pub fn new(show: bool) -> Self {
        Self::with_unit(show, "B")
    }

    /// The same, counting in `unit` (`""` for plain counts).
    pub fn with_unit(show: bool, unit: &'static str) -> Self {
        PyProgress {
            show,
            unit,
            bar: Mutex::new(None),
            last: Mutex::new(Instant::now()),
            pending: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
            interrupt: Mutex::new(None),
        }
    }

    /// The KeyboardInterrupt (or other signal error) seen while running, if any.
    pub fn take_interrupt(&self) -> Option<PyErr> {
        self.interrupt.lock().ok().and_then(|mut e| e.take())
    }

    fn tick(&self, force: bool) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if !force && last.elapsed() < TICK {
            return;
        }
        *last = Instant::now();
        let n = self.pending.swap(0, Ordering::Relaxed);
        Python::attach(|py| {
            if let Err(e) = py.check_signals() {
                self.cancelled.store(true, Ordering::Relaxed);
                if let Ok(mut slot) = self.interrupt.lock() {
                    *slot = Some(e);
                }
            }
            if let Ok(bar) = self.bar.lock() {
                if let Some(bar) = bar.as_ref() {
                    let _ = bar.call_method1(py, "update", (n,));
                }
            }
        });
    }
}

impl Progress for PyProgress {
    fn start(&self, what: &str, total: u64) {
        if !self.show {
            return;
        }
        Python::attach(|py| {
            let Ok(tqdm) = py.import("tqdm.auto").and_then(|m| m.getattr("tqdm")) else {
                return;
            };
            let kwargs = pyo3::types::PyDict::new(py);
            let _ = kwargs.set_item("total", total);
            let _ = kwargs.set_item("desc", what);
            let _ = kwargs.set_item("unit", self.unit);
            let _ = kwargs.set_item("unit_scale", true);
            let _ = kwargs.set_item("leave", false);
            if let (Ok(bar), Ok(mut slot)) = (tqdm.call((), Some(&kwargs)), self.bar.lock()) {
                *slot = Some(bar.unbind());
            }
        });
    }

    fn advance(&self, n: u64) {
        self.pending.fetch_add(n, Ordering::Relaxed);
        self.tick(false);
    }

    fn finish(&self) {
        self.tick(true);
        Python::attach(|py| {
            if let Ok(mut slot) = self.bar.lock() {
                if let Some(bar) = slot.take() {
                    let _ = bar.call_method0(py, "close");
                }
            }
        });
    }

    fn cancelled(&self) -> bool {
        self.tick(false);
        self.cancelled.load(Ordering::Relaxed)
    }
}
