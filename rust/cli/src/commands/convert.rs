//! `tokenloom convert SRC DST --to tokenloom|megatron`: copy a dataset into
//! another format.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use tokenloom_core::shard::compat::convert::{convert_dataset, Target};
use tokenloom_core::shard::Compression;
use tokenloom_core::{Error, Progress};
use tokenloom_remote::{is_url, RemoteOptions};

use super::Failure;

/// Arguments of `tokenloom convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// What to read: a dataset directory, a Megatron .bin/.idx (or their path
    /// prefix), a datatrove .ds (or folder of them), an indexed raw token file, or a dataset URL
    /// (s3://, gs://, az://, http(s)://, file://).
    #[arg(value_name = "SRC")]
    pub src: PathBuf,
    /// Where to write: a dataset directory, or a Megatron path prefix
    /// (PREFIX.bin and PREFIX.idx are written; a .bin/.idx name also works), or a dataset URL
    /// (staged locally, then uploaded with its manifest last).
    #[arg(value_name = "DST")]
    pub dst: PathBuf,
    /// Store tokenloom shard bodies as zstd frames (decompressed once into the cache on read).
    #[arg(long, value_enum, default_value = "none")]
    pub compression: CompressionArg,
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

/// `--compression` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// Plain token files.
    None,
    /// One zstd frame per shard body.
    Zstd,
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
    let compression = match args.compression {
        CompressionArg::None => None,
        CompressionArg::Zstd => Some(Compression::Zstd),
    };
    let started = Instant::now();
    let src = super::open(&args.src)?;
    let dst = args.dst.to_string_lossy();
    let report = if is_url(&dst) {
        if to != Target::Tokenloom {
            return Err(Error::invalid(
                "to",
                "a URL destination takes a tokenloom dataset (--to tokenloom)",
            )
            .into());
        }
        let remote = RemoteOptions::from_env()?;
        let staging = tokenloom_remote::staging_dir(&dst, &remote);
        let _ = std::fs::remove_dir_all(&staging);
        let converted =
            convert_dataset(&src, &staging, to, true, compression, progress).and_then(|mut r| {
                tokenloom_remote::upload_dataset(
                    &staging,
                    &dst,
                    &remote,
                    args.overwrite,
                    progress,
                )?;
                r.written = vec![args.dst.clone()];
                Ok(r)
            });
        let _ = std::fs::remove_dir_all(&staging);
        converted?
    } else {
        convert_dataset(&src, &args.dst, to, args.overwrite, compression, progress)?
    };
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
