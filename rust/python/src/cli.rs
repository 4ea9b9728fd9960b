//! `run_cli`: the `tokenloom` console script runs the standalone binary's
//! code in-process, on a worker thread, while this thread watches for Ctrl-C.

use std::sync::mpsc;
use std::time::Duration;

use pyo3::prelude::*;
use tokenloom_core::CancelToken;

const POLL: Duration = Duration::from_millis(100);

/// Runs the `tokenloom` command line `argv` (`argv[0]` is the program name)
/// on the process's stdout and stderr and returns its exit status. Ctrl-C
/// cancels the running command, which then returns 130.
#[pyfunction]
pub fn run_cli(py: Python<'_>, argv: Vec<String>) -> PyResult<i32> {
    // Anything Python buffered must come out before the command writes.
    for name in ["stdout", "stderr"] {
        if let Ok(stream) = py.import("sys").and_then(|m| m.getattr(name)) {
            let _ = stream.call_method0("flush");
        }
    }
    let cancel = CancelToken::new();
    let worker_cancel = cancel.clone();
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::Builder::new()
        .name("tokenloom-cli".into())
        .spawn(move || {
            let status =
                std::panic::catch_unwind(|| tokenloom_cli::run_stdio(argv, &worker_cancel))
                    .unwrap_or(tokenloom_cli::EXIT_FAILURE);
            let _ = tx.send(status);
        })?;
    let mut rx = rx;
    let status = loop {
        // The receiver moves into the detached closure and back: it is not `Sync`.
        let (got, back) = py.detach(move || (rx.recv_timeout(POLL), rx));
        rx = back;
        match got {
            Ok(status) => break status,
            Err(mpsc::RecvTimeoutError::Disconnected) => break tokenloom_cli::EXIT_FAILURE,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if py.check_signals().is_err() {
                    cancel.cancel();
                }
            }
        }
    };
    let _ = py.detach(|| worker.join());
    Ok(status)
}
