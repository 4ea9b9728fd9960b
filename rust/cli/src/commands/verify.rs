//! `tokenloom verify PATH [--check-vocab]`: check a dataset completely,
//! provenance sidecars included.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use tokenloom_core::shard::verify::verify_dataset;
use tokenloom_core::{Progress, VerifyOptions};

use super::Failure;

/// Arguments of `tokenloom verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A dataset directory (holding manifest.json), a raw token file indexed by `tokenloom index`,
    /// a Megatron .bin/.idx (or their path prefix), a datatrove .ds (or a folder of them), or a
    /// dataset URL (s3://, gs://, az://, http(s)://, file://): its shards are fetched through the
    /// cache and checked one at a time.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Also check that every token is below the manifest's vocab_size.
    #[arg(long)]
    pub check_vocab: bool,
}

/// Verifies every checksum and offset; the first problem found is the error.
pub fn run(args: &VerifyArgs, out: &mut dyn Write, progress: &dyn Progress) -> Result<(), Failure> {
    let opts = VerifyOptions {
        check_vocab: args.check_vocab,
    };
    let ds = super::open(&args.path)?;
    let report = verify_dataset(&ds, opts, progress)?;
    write!(
        out,
        "ok: {} shards, {} documents, {} tokens verified",
        report.shards, report.docs, report.tokens
    )?;
    if report.sources > 0 {
        write!(out, ", provenance of {} shards", report.sources)?;
    }
    writeln!(out)?;
    Ok(())
}
