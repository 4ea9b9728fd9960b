//! The `tokenloom` command line: `convert`, `index`, `inspect`, `order` and `verify`
//! (and `build`, listed here and run by the Python package's `tokenloom` command).
//!
//! Everything runs through [`run_with`], which writes to the given writers and
//! returns the exit status instead of exiting, so the same code serves the
//! standalone binary (`src/main.rs`) and the Python console script (the
//! bindings' `run_cli`).

use std::ffi::OsString;
use std::io::Write;

use clap::Parser;
use tokenloom_core::CancelToken;

pub mod chart;
pub mod commands;
pub mod progress;

pub use commands::{Command, Failure};
pub use progress::BarProgress;

/// Exit status: success.
pub const EXIT_OK: i32 = 0;
/// Exit status: the data is damaged, unreadable or failed verification.
pub const EXIT_FAILURE: i32 = 1;
/// Exit status: bad command line or invalid argument value.
pub const EXIT_USAGE: i32 = 2;
/// Exit status: cancelled by Ctrl-C (128 + SIGINT).
pub const EXIT_CANCELLED: i32 = 130;

/// Token datasets for LLM training: build, index, convert, inspect, order and verify datasets.
#[derive(Debug, Parser)]
#[command(name = "tokenloom", bin_name = "tokenloom", version)]
pub struct Cli {
    /// Do not draw progress bars (they are never drawn when stderr is not a terminal).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Runs the command line `argv` (`argv[0]` is the program name, as in
/// `std::env::args_os()`), writing results to `out` and diagnostics to `err`.
///
/// Returns the exit status: 0 ok (also `--help`/`--version`), 1 data or
/// verification error, 2 usage error or invalid argument, 130 cancelled
/// through `cancel`. Never exits the process and never panics on bad input.
/// Progress bars, when shown, are drawn directly on the process's stderr.
pub fn run_with<I, T>(
    argv: I,
    out: &mut dyn Write,
    err: &mut dyn Write,
    cancel: &CancelToken,
) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to `out` with status 0; errors to `err` with 2.
            let sink: &mut dyn Write = if e.use_stderr() { &mut *err } else { &mut *out };
            let text = e.render().to_string();
            let _ = sink.write_all(text.as_bytes());
            if !text.ends_with('\n') {
                let _ = sink.write_all(b"\n");
            }
            let _ = sink.flush();
            return e.exit_code();
        }
    };
    let progress = BarProgress::new(cancel.clone(), !cli.quiet);
    let result = commands::run(cli.command, out, &progress);
    let flushed = out.flush();
    let result = result.and_then(|()| flushed.map_err(Failure::Output));
    match result {
        Ok(()) => EXIT_OK,
        // A closed pipe (`tokenloom inspect DS | head -1`) is not worth a message.
        Err(Failure::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => EXIT_FAILURE,
        Err(failure) => {
            let _ = writeln!(err, "error: {failure}");
            let _ = err.flush();
            failure.exit_code()
        }
    }
}

/// [`run_with`] on the process's stdout and stderr.
pub fn run_stdio<I, T>(argv: I, cancel: &CancelToken) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    // stderr stays unlocked: the progress bar draws on it too.
    let stdout = std::io::stdout();
    run_with(argv, &mut stdout.lock(), &mut std::io::stderr(), cancel)
}
