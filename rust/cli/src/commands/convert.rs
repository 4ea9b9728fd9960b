//! `tokenloom convert SRC DST --to tokenloom|megatron`: copy a dataset into
//! another format.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use tokenloom_core::shard::compat::convert::{convert, Target};
use tokenloom_core::Progress;

use super::Failure;

/// Arguments of `tokenloom convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// What to read: a dataset directory, a Megatron .bin/.idx (or their path
    /// prefix), a datatrove .ds (or folder of them), or an indexed raw token file.
    #[arg(value_name = "SRC")]
    pub src: PathBuf,
    /// Where to write: a dataset directory, or a Megatron path prefix
    /// (PREFIX.bin and PREFIX.idx are written; a .bin/.idx name also works).
    #[arg(value_name = "DST")]
    pub dst: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    pub to: TargetArg,
    /// Replace an existing destination (atomically).
    #[arg(long)]
    pub overwrite: bool,
}

/// `--to` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TargetArg {
    /// A tokenloom dataset directory.
    Tokenloom,
    /// A Megatron-LM indexed dataset (PREFIX.bin + PREFIX.idx).
    Megatron,
}

/// Converts and prints a one-line summary.
pub fn run(
    args: &ConvertArgs,
    out: &mut dyn Write,
    progress: &dyn Progress,
) -> Result<(), Failure> {
    let to = match args.to {
        TargetArg::Tokenloom => Target::Tokenloom,
        TargetArg::Megatron => Target::Megatron,
    };
    let started = Instant::now();
    let report = convert(&args.src, &args.dst, to, args.overwrite, progress)?;
    let written: Vec<String> = report
        .written
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    writeln!(
        out,
        "converted {}: {} documents, {} tokens, dtype {} -> {} in {:.3} s",
        args.src.display(),
        report.num_docs,
        report.num_tokens,
        report.dtype,
        written.join(", "),
        started.elapsed().as_secs_f64(),
    )?;
    Ok(())
}
