//! The subcommands, one per module, and the error type they share.

use std::fmt;
use std::io::{self, Write};

use std::path::Path;

use clap::Subcommand;
use tokenloom_core::{Dataset, Error, Progress};
use tokenloom_remote::RemoteOptions;

pub mod convert;
pub mod index;
pub mod inspect;
pub mod order;
pub mod verify;

/// The subcommands of `tokenloom`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tokenize corpora (.jsonl[.gz|.zst], .parquet, .npy) into one dataset (runs in Python:
    /// the `tokenloom` command of the Python package; see `tokenloom build --help` there).
    #[command(disable_help_flag = true)]
    Build(BuildArgs),
    /// Copy a dataset (tokenloom, Megatron, datatrove, indexed raw) into the tokenloom or Megatron format.
    Convert(convert::ConvertArgs),
    /// Index a raw token file (nanoGPT headerless or llm.c .bin) by its end-of-document token.
    Index(index::IndexArgs),
    /// Print a dataset's sizes, metadata and document-length distribution.
    Inspect(inspect::InspectArgs),
    /// Order documents for In-Context Pretraining (related documents share a context).
    Order(order::OrderArgs),
    /// Check every checksum and offset of a dataset (and optionally every token).
    Verify(verify::VerifyArgs),
}

/// Arguments of `tokenloom build`: passed on to the Python package, which runs it.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Inputs and options of the build.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<std::ffi::OsString>,
}

/// Why a command failed.
#[derive(Debug)]
pub enum Failure {
    /// The core refused or failed the operation.
    Core(Error),
    /// Writing the command's output failed.
    Output(io::Error),
}

impl Failure {
    /// The process exit status for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Core(Error::Cancelled) => crate::EXIT_CANCELLED,
            Failure::Core(Error::InvalidArgument { .. } | Error::AlreadyExists { .. }) => {
                crate::EXIT_USAGE
            }
            Failure::Core(_) | Failure::Output(_) => crate::EXIT_FAILURE,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Core(e) => e.fmt(f),
            Failure::Output(e) => write!(f, "cannot write the output: {e}"),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Failure::Core(e) => Some(e),
            Failure::Output(e) => Some(e),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Core(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Output(e)
    }
}

/// Opens a dataset path or URL (remote settings from the environment).
pub fn open(path: &Path) -> Result<Dataset, Error> {
    tokenloom_remote::open(&path.to_string_lossy(), &RemoteOptions::from_env()?)
}

/// Runs one subcommand, writing its result to `out`.
pub fn run(command: Command, out: &mut dyn Write, progress: &dyn Progress) -> Result<(), Failure> {
    match command {
        Command::Build(_) => Err(Failure::Core(Error::invalid(
            "command",
            "build tokenizes with Python's tokenizers, so it runs from the Python package: `pip install tokenloom`, then `tokenloom build ...` (the command installed with it) or tokenloom.build() in Python",
        ))),
        Command::Convert(args) => convert::run(&args, out, progress),
        Command::Index(args) => index::run(&args, out, progress),
        Command::Inspect(args) => inspect::run(&args, out),
        Command::Order(args) => order::run(&args, out, progress),
        Command::Verify(args) => verify::run(&args, out, progress),
    }
}
