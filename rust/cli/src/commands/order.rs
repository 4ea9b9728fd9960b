//! `tokenloom order PATH`: In-Context Pretraining order with the built-in
//! embedder, stored as `PATH/orders/NAME.order`; `--report` prints its
//! quality report, `--show` the report of an order already made, `--png` draws
//! its similarity histograms.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use tokenloom_core::order::{
    self, store, EmbedParams, Input, OrderParams, ReferenceParams, Report, Variant,
};
use tokenloom_core::plan::Order;
use tokenloom_core::{Dataset, Error, Progress};

use super::Failure;
use crate::chart;

/// Which traversal to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VariantArg {
    /// The paper: minimum-degree starts, one path restarting only when stuck.
    Paper,
    /// The public script: lowest-id starts, 9 neighbours, segments of 21, short ones merged.
    Reference,
}

/// Arguments of `tokenloom order`.
#[derive(Debug, Args)]
pub struct OrderArgs {
    /// A dataset directory (or any path `tokenloom inspect` accepts).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Training context length in tokens.
    #[arg(long, default_value_t = 8192)]
    pub seq_len: u64,
    /// Nearest neighbours per document.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Name of the order (TokenDataset(..., order=NAME)).
    #[arg(long, default_value = "iclm")]
    pub name: String,
    /// Similarity at or above which a document is a near-duplicate of a kept neighbour.
    #[arg(long, default_value_t = 0.95)]
    pub dedup: f32,
    /// Keep near-duplicates.
    #[arg(long)]
    pub no_dedup: bool,
    /// Traversal.
    #[arg(long, value_enum, default_value_t = VariantArg::Paper)]
    pub variant: VariantArg,
    /// Cut path segments after this many documents (0: never; reference: 21).
    #[arg(long, default_value_t = 0)]
    pub max_segment: usize,
    /// Seed of tie-breaking, hashing and the report's random baseline.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Exact kNN graph (default: exact below 20,000 documents).
    #[arg(long, conflicts_with = "approximate")]
    pub exact: bool,
    /// Approximate kNN graph (IVF) even for small datasets.
    #[arg(long)]
    pub approximate: bool,
    /// Dimension of the built-in embeddings.
    #[arg(long, default_value_t = 256)]
    pub dim: usize,
    /// Tokens read per document by the embedder (0: all).
    #[arg(long, default_value_t = 2048)]
    pub max_tokens: usize,
    /// Print the full quality report.
    #[arg(long)]
    pub report: bool,
    /// Print the report of the existing order NAME instead of making one.
    #[arg(long)]
    pub show: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also draw the histograms of adjacent-document similarity (order vs random) to this PNG file.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
}

/// Makes (or, with `--show`, reads) the order and prints what was asked.
pub fn run(args: &OrderArgs, out: &mut dyn Write, progress: &dyn Progress) -> Result<(), Failure> {
    if let Some(png) = &args.png {
        chart::check_destination(png)?;
    }
    let (file, report) = if args.show {
        existing(&args.path, &args.name)?
    } else {
        make(args, progress)?
    };
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::invalid("report", e.to_string()))?;
        writeln!(out, "{text}")?;
        return draw(args, &report, None);
    }
    writeln!(out, "{}: {}", file.display(), report.summary())?;
    if args.report || args.show {
        print_report(&report, out)?;
    }
    draw(args, &report, Some(out))
}

/// Writes the chart when `--png` asks for one, saying so on `out` if given.
fn draw(args: &OrderArgs, report: &Report, out: Option<&mut dyn Write>) -> Result<(), Failure> {
    let Some(png) = &args.png else {
        return Ok(());
    };
    chart::write_png(report, png)?;
    if let Some(out) = out {
        writeln!(out, "similarity histograms: {}", png.display())?;
    }
    Ok(())
}

fn make(args: &OrderArgs, progress: &dyn Progress) -> Result<(PathBuf, Report), Failure> {
    let variant = match args.variant {
        VariantArg::Paper => Variant::Paper {
            max_segment: args.max_segment,
        },
        VariantArg::Reference => Variant::Reference(ReferenceParams {
            max_segment: if args.max_segment == 0 {
                21
            } else {
                args.max_segment
            },
            ..ReferenceParams::default()
        }),
    };
    let params = OrderParams {
        seq_len: args.seq_len,
        k: args.k,
        dedup: (!args.no_dedup).then_some(args.dedup),
        variant,
        seed: args.seed,
        exact: if args.exact {
            Some(true)
        } else if args.approximate {
            Some(false)
        } else {
            None
        },
        embed: EmbedParams {
            dim: args.dim,
            max_tokens: args.max_tokens,
            seed: args.seed,
            ..EmbedParams::default()
        },
    };
    store::order_path(&args.path, &args.name)?;
    let ds = Dataset::open(&args.path)?;
    let source = serde_json::json!({"embeddings": "builtin", "dim": args.dim, "max_tokens": args.max_tokens});
    let done = order::order_dataset(&ds, &params, Input::Builtin, source, progress)?;
    let file = store::save(&args.path, &args.name, &done.order)?;
    Ok((file, done.report))
}

fn existing(path: &Path, name: &str) -> Result<(PathBuf, Report), Failure> {
    let file = store::resolve(path, Path::new(name))?;
    let o = Order::read(&file)?;
    o.check_dataset(&Dataset::open(path)?)?;
    let meta: serde_json::Value = serde_json::from_str(o.meta()).unwrap_or_default();
    let report = serde_json::from_value(meta["report"].clone()).map_err(|_| {
        Error::invalid(
            "order",
            format!(
                "{} carries no report (it was not made by tokenloom order)",
                file.display()
            ),
        )
    })?;
    Ok((file, report))
}

fn print_report(r: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    let p = |out: &mut dyn Write, k: &str, v: String| writeln!(out, "  {k:<34} {v}");
    p(out, "documents in the dataset", r.docs.to_string())?;
    p(out, "documents ordered", r.ordered.to_string())?;
    p(out, "empty documents left out", r.empty.to_string())?;
    p(out, "near-duplicates left out", r.duplicates.to_string())?;
    p(
        out,
        "featureless documents (at the end)",
        r.featureless.to_string(),
    )?;
    p(out, "path segments (restarts + 1)", r.segments.to_string())?;
    p(
        out,
        "documents per segment (mean / max)",
        format!("{:.1} / {}", r.mean_segment_docs, r.max_segment_docs),
    )?;
    p(
        out,
        "single-document segments",
        r.single_doc_segments.to_string(),
    )?;
    p(out, "training rows", r.rows.to_string())?;
    for (what, s) in [("ordered", &r.ordered_pairs), ("random", &r.random_pairs)] {
        p(
            out,
            &format!("adjacent pairs in rows, {what}"),
            format!(
                "{} pairs, {:.1}% kNN edges, mean similarity {:.4} ({} measured)",
                s.pairs,
                100.0 * s.edges as f64 / s.pairs.max(1) as f64,
                s.mean_similarity,
                s.measured
            ),
        )?;
    }
    p(
        out,
        "similarity ratio ordered / random",
        format!("{:.2}x ({})", r.similarity_ratio, r.similarity_source),
    )?;
    let secs: Vec<String> = r
        .seconds
        .iter()
        .map(|(k, v)| format!("{k} {v:.2}s"))
        .collect();
    p(out, "time", secs.join(", "))
}
