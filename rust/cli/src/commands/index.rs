//! `tokenloom index RAW.bin --eos ID`: write a tokenloom `.idx` for a raw token file.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use tokenloom_core::shard::{index_raw, Boundary, RawHeader, RawIndexOptions};
use tokenloom_core::{DType, Progress};

use super::Failure;

/// Arguments of `tokenloom index`.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// Raw token file: headerless (nanoGPT) or with an llm.c 1024-byte header.
    #[arg(value_name = "RAW.bin")]
    pub raw: PathBuf,
    /// Token type; required unless the file has an llm.c header, which implies it.
    #[arg(long, value_enum)]
    pub dtype: Option<DTypeArg>,
    /// End-of-document token id (e.g. 50256 for GPT-2).
    #[arg(long, value_name = "ID")]
    pub eos: u64,
    /// Whether EOS ends its document (after) or starts it (before).
    /// [default: before for llm.c files, after otherwise]
    #[arg(long, value_enum)]
    pub boundary: Option<BoundaryArg>,
    /// Header of the raw file.
    #[arg(long, value_enum, default_value_t = HeaderArg::Auto)]
    pub header: HeaderArg,
    /// Where to write the index [default: RAW with extension .idx, where readers look for it].
    #[arg(
        short = 'o',
        long = "out",
        visible_alias = "output",
        value_name = "OUT.idx"
    )]
    pub out: Option<PathBuf>,
    /// Replace an existing index (atomically).
    #[arg(long)]
    pub overwrite: bool,
}

/// `--dtype` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    /// Unsigned 16-bit tokens (vocabularies up to 65,536).
    #[value(alias = "uint16")]
    U16,
    /// Unsigned 32-bit tokens.
    #[value(alias = "uint32")]
    U32,
}

/// `--boundary` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BoundaryArg {
    /// EOS ends a document and belongs to it (nanoGPT appends EOT).
    After,
    /// EOS starts a document and belongs to it (llm.c prepends EOT).
    Before,
}

/// `--header` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HeaderArg {
    /// Detect an llm.c header by its magic and size, else none.
    Auto,
    /// Headerless tokens.
    None,
    /// The llm.c 1024-byte header (it must be there).
    Llmc,
}

impl From<DTypeArg> for DType {
    fn from(d: DTypeArg) -> Self {
        match d {
            DTypeArg::U16 => DType::U16,
            DTypeArg::U32 => DType::U32,
        }
    }
}

impl From<BoundaryArg> for Boundary {
    fn from(b: BoundaryArg) -> Self {
        match b {
            BoundaryArg::After => Boundary::After,
            BoundaryArg::Before => Boundary::Before,
        }
    }
}

impl From<HeaderArg> for RawHeader {
    fn from(h: HeaderArg) -> Self {
        match h {
            HeaderArg::Auto => RawHeader::Auto,
            HeaderArg::None => RawHeader::None,
            HeaderArg::Llmc => RawHeader::LlmC,
        }
    }
}

fn boundary_name(b: Boundary) -> &'static str {
    match b {
        Boundary::After => "after",
        Boundary::Before => "before",
    }
}

/// Scans the file, writes the index and prints a one-line summary.
pub fn run(args: &IndexArgs, out: &mut dyn Write, progress: &dyn Progress) -> Result<(), Failure> {
    let opts = RawIndexOptions {
        dtype: args.dtype.map(DType::from),
        eos: args.eos,
        boundary: args.boundary.map(Boundary::from),
        header: args.header.into(),
        out: args.out.clone(),
        overwrite: args.overwrite,
    };
    let started = Instant::now();
    let report = index_raw(&args.raw, &opts, progress)?;
    let secs = started.elapsed().as_secs_f64();
    let bytes = report.num_tokens as f64 * report.dtype.itemsize() as f64;
    let gbps = if secs > 0.0 { bytes / secs / 1e9 } else { 0.0 };
    writeln!(
        out,
        "indexed {}: {} documents, {} tokens, dtype {}, header {}, boundary {} -> {} in {:.3} s ({:.2} GB/s)",
        args.raw.display(),
        report.num_docs,
        report.num_tokens,
        report.dtype,
        report.header,
        boundary_name(report.boundary),
        report.idx_path.display(),
        secs,
        gbps,
    )?;
    Ok(())
}
