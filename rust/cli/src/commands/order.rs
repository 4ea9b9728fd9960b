//! `tokenloom order PATH`: In-Context Pretraining order with the built-in
//! embedder, stored as `PATH/orders/NAME.order`; `--report` prints its
//! quality report, `--show` the report of an order already made, `--png` draws
//! its similarity histograms.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use tokenloom_core::order::{
    self, defaults, score, store, EmbedParams, Independent, Input, OrderParams, ReferenceParams,
    Report, Scorer, Variant,
};
use tokenloom_core::order_file::Order;
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
    #[arg(long, default_value_t = defaults::SEQ_LEN)]
    pub seq_len: u64,
    /// Nearest neighbours per document.
    #[arg(short, long, default_value_t = defaults::K)]
    pub k: usize,
    /// Name of the order (TokenDataset(..., order=NAME)).
    #[arg(long, default_value = defaults::NAME)]
    pub name: String,
    /// Similarity at or above which a document is a near-duplicate of a kept neighbour.
    #[arg(long, default_value_t = defaults::DEDUP as f32)]
    pub dedup: f32,
    /// Keep near-duplicates.
    #[arg(long)]
    pub no_dedup: bool,
    /// Traversal.
    #[arg(long, value_enum, default_value_t = VariantArg::Paper)]
    pub variant: VariantArg,
    /// Cut path segments after this many documents (0: never; reference: 21).
    #[arg(long, default_value_t = defaults::MAX_SEGMENT)]
    pub max_segment: usize,
    /// Seed of tie-breaking, hashing and the report's random baseline.
    #[arg(long, default_value_t = defaults::SEED)]
    pub seed: u64,
    /// Exact kNN graph (default: exact below 20,000 documents).
    #[arg(long, conflicts_with = "approximate")]
    pub exact: bool,
    /// Approximate kNN graph (IVF) even for small datasets.
    #[arg(long)]
    pub approximate: bool,
    /// Dimension of the built-in embeddings.
    #[arg(long, default_value_t = defaults::DIM)]
    pub dim: usize,
    /// Tokens read per document by the embedder (0: all).
    #[arg(long, default_value_t = defaults::MAX_TOKENS)]
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
    /// Score label agreement of adjacent documents in rows against a random
    /// order: a text file with one label per document of the dataset, one per
    /// line (an empty line: no label). Stored with a new order; computed on the
    /// spot with --show.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
}

/// Makes (or, with `--show`, reads) the order and prints what was asked.
pub fn run(args: &OrderArgs, out: &mut dyn Write, progress: &dyn Progress) -> Result<(), Failure> {
    if let Some(png) = &args.png {
        chart::check_destination(png)?;
    }
    let labels = args.labels.as_deref().map(read_labels).transpose()?;
    let (file, mut report) = if args.show {
        existing(&args.path, &args.name)?
    } else {
        make(args, labels.as_deref(), progress)?
    };
    if let (true, Some(l)) = (args.show, &labels) {
        let ds = Dataset::open(&args.path)?;
        let o = Order::read(&file)?;
        let meta: serde_json::Value = serde_json::from_str(o.meta()).unwrap_or_default();
        let seq_len = meta["seq_len"].as_u64().unwrap_or(args.seq_len);
        let seed = meta["seed"].as_u64().unwrap_or(args.seed);
        let scorer = Scorer {
            name: "",
            vectors: None,
            labels: Some(l),
        };
        let labelled = score::score(&ds, &o, seq_len, &scorer, seed, progress)?;
        let ind = report.independent.get_or_insert_with(Independent::default);
        ind.labels = labelled.labels;
    }
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::invalid("report", e.to_string()))?;
        writeln!(out, "{text}")?;
        return draw(args, &report, None);
    }
    writeln!(out, "{}: {}", file.display(), report.summary())?;
    if let Some(ind) = &report.independent {
        writeln!(out, "independent score: {}", independent_line(ind))?;
    }
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

/// One label per line (an empty line: none), as label ids in order of first appearance.
fn read_labels(path: &Path) -> Result<Vec<i64>, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut ids = std::collections::HashMap::new();
    Ok(text
        .lines()
        .map(|l| match l.trim() {
            "" => -1,
            label => {
                let next = ids.len() as i64;
                *ids.entry(label.to_string()).or_insert(next)
            }
        })
        .collect())
}

/// The independent score in one line: differences against random, and the
/// normalised similarity.
fn independent_line(ind: &Independent) -> String {
    let mut parts = Vec::new();
    if let Some(s) = &ind.similarity {
        parts.push(format!(
            "{} similarity {:.3} vs {:.3} at random ({:+.3}), normalised {:.2} (1 = every neighbour its nearest, at {:.3})",
            ind.scorer, s.ordered, s.random, s.difference, s.normalised, s.nearest
        ));
    }
    if let Some(l) = &ind.labels {
        parts.push(format!(
            "same label {:.1}% vs {:.1}% at random ({:+.1} points; chance {:.1}%)",
            100.0 * l.ordered,
            100.0 * l.random,
            100.0 * l.difference,
            100.0 * l.chance
        ));
    }
    parts.join("; ")
}

fn make(
    args: &OrderArgs,
    labels: Option<&[i64]>,
    progress: &dyn Progress,
) -> Result<(PathBuf, Report), Failure> {
    let variant = match args.variant {
        VariantArg::Paper => Variant::Paper {
            max_segment: args.max_segment,
        },
        VariantArg::Reference => {
            Variant::Reference(ReferenceParams::with_max_segment(args.max_segment))
        }
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
    let mut done = order::order_dataset(&ds, &params, Input::Builtin, source, progress)?;
    if let Some(l) = labels {
        let scorer = Scorer {
            name: "",
            vectors: None,
            labels: Some(l),
        };
        let ind = score::score(&ds, &done.order, args.seq_len, &scorer, args.seed, progress)?;
        done.order = score::annotate(&ds, &done.order, &ind)?;
        done.report.independent = Some(ind);
    }
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
        "similarity ordered - random",
        format!(
            "{:+.4} ({}; the vectors that built the order)",
            r.ordered_pairs.mean_similarity - r.random_pairs.mean_similarity,
            r.similarity_source
        ),
    )?;
    if let Some(ind) = &r.independent {
        if let Some(s) = &ind.similarity {
            p(
                out,
                &format!("independent similarity ({})", ind.scorer),
                format!(
                    "{:.4} ordered, {:.4} random, {:.4} nearest neighbour; {:+.4} difference, {:.3} normalised",
                    s.ordered, s.random, s.nearest, s.difference, s.normalised
                ),
            )?;
        }
        if let Some(l) = &ind.labels {
            p(
                out,
                "same label in adjacent pairs",
                format!(
                    "{:.2}% ordered, {:.2}% random ({:+.2} points), chance {:.2}% ({} pairs)",
                    100.0 * l.ordered,
                    100.0 * l.random,
                    100.0 * l.difference,
                    100.0 * l.chance,
                    l.pairs
                ),
            )?;
        }
    }
    let secs: Vec<String> = r
        .seconds
        .iter()
        .map(|(k, v)| format!("{k} {v:.2}s"))
        .collect();
    p(out, "time", secs.join(", "))
}
