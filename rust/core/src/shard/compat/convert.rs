//! `tokenloom convert`: copy any dataset tokenloom reads into a tokenloom
//! dataset or a Megatron `.bin/.idx` pair, streaming document by document.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::megatron;
use crate::error::{Error, IoContext, Result};
use crate::io::{create_new, fsync_dir, write_atomic};
use crate::progress::Progress;
use crate::shard::compression::Compression;
use crate::shard::dtype::{DType, TokenBuf, Tokens};
use crate::shard::lock::TargetLock;
use crate::shard::reader::Dataset;
use crate::shard::writer::{DatasetWriter, WriterOptions};
use crate::shard::Acquired;

/// Output formats of [`convert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A tokenloom dataset directory.
    Tokenloom,
    /// A Megatron `PREFIX.bin` + `PREFIX.idx` pair.
    Megatron,
}

/// What [`convert`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvertReport {
    /// The files or directory written (the dataset directory, or the
    /// Megatron `.bin` and `.idx`).
    pub written: Vec<PathBuf>,
    /// Documents copied.
    pub num_docs: u64,
    /// Tokens copied.
    pub num_tokens: u64,
    /// Token type written.
    pub dtype: DType,
}

/// Progress is reported about every this many token bytes.
const STEP: u64 = 8 << 20;

/// Copies every document of `src` (any path [`Dataset::open`] accepts) to
/// `dst` in the `to` format. Writes are atomic: a failure or a cancellation
/// leaves `dst` as it was. An existing `dst` is replaced only if `overwrite`.
pub fn convert(
    src: &Path,
    dst: &Path,
    to: Target,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<ConvertReport> {
    let ds = Dataset::open(src)?;
    convert_dataset(&ds, dst, to, overwrite, None, progress)
}

/// [`convert`] from an opened dataset (a remote one included); a tokenloom
/// destination stores its shard bodies as `compression`.
pub fn convert_dataset(
    ds: &Dataset,
    dst: &Path,
    to: Target,
    overwrite: bool,
    compression: Option<Compression>,
    progress: &dyn Progress,
) -> Result<ConvertReport> {
    if compression.is_some() && to != Target::Tokenloom {
        return Err(Error::invalid(
            "compression",
            "only tokenloom datasets store compressed shards; drop it for --to megatron",
        ));
    }
    progress.start("convert", ds.num_tokens() * ds.dtype().itemsize() as u64);
    let written = match to {
        Target::Tokenloom => to_tokenloom(ds, dst, overwrite, compression, progress)?,
        Target::Megatron => to_megatron(ds, dst, overwrite, progress)?,
    };
    progress.finish();
    Ok(ConvertReport {
        written,
        num_docs: ds.num_docs(),
        num_tokens: ds.num_tokens(),
        dtype: ds.dtype(),
    })
}

/// Calls `each` on every document in order, reporting progress and
/// checking for cancellation every [`STEP`] bytes. Documents are copied out
/// by positioned reads: a source truncated meanwhile is an error, not a fault.
fn for_each_doc(
    ds: &Dataset,
    progress: &dyn Progress,
    mut each: impl FnMut(u64, Tokens<'_>) -> Result<()>,
) -> Result<()> {
    let mut pending = 0u64;
    let mut shard = usize::MAX;
    let mut buf = TokenBuf::default();
    // A remote dataset's shards are fetched one at a time, as the copy reaches them.
    let mut acquired: Option<Acquired> = None;
    for i in 0..ds.num_docs() {
        let (s, _) = ds.locate(i)?;
        let changed = s != shard;
        if changed {
            acquired = None;
            if let Some(p) = ds.provider() {
                acquired = Some(Acquired::new(Arc::clone(p), vec![s])?);
            }
            shard = s;
        }
        let view = acquired.as_ref().map_or(ds, |a| a.view());
        if changed {
            view.check_unchanged(s)?; // a shard truncated meanwhile: an error, not a fault
        }
        let doc = view.read_doc(i, &mut buf)?;
        each(i, doc)?;
        pending += doc.as_bytes().len() as u64;
        if pending >= STEP {
            view.check_unchanged(s)?;
            progress.check()?;
            progress.advance(pending);
            pending = 0;
        }
    }
    progress.check()?;
    progress.advance(pending);
    Ok(())
}

fn to_tokenloom(
    ds: &Dataset,
    dst: &Path,
    overwrite: bool,
    compression: Option<Compression>,
    progress: &dyn Progress,
) -> Result<Vec<PathBuf>> {
    let m = ds.manifest();
    let opts = WriterOptions {
        dtype: ds.dtype(),
        eos_id: m.eos_id,
        vocab_size: m.vocab_size,
        tokenizer: m.tokenizer.clone(),
        overwrite,
        ..WriterOptions::default()
    };
    // Dropping the writer on an error aborts it: nothing partial stays.
    let mut w = DatasetWriter::create(dst, opts)?;
    w.set_compression(compression)?;
    for_each_doc(ds, progress, |_, doc| w.add_tokens(doc))?;
    w.close()?;
    Ok(vec![dst.to_path_buf()])
}

/// `PREFIX` for a Megatron destination given as `PREFIX`, `PREFIX.bin` or `PREFIX.idx`.
pub fn megatron_prefix(dst: &Path) -> PathBuf {
    match dst.extension().and_then(|e| e.to_str()) {
        Some("bin" | "idx") => dst.with_extension(""),
        _ => dst.to_path_buf(),
    }
}

fn suffixed(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Removes the temporaries unless disarmed.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

fn to_megatron(
    ds: &Dataset,
    dst: &Path,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<Vec<PathBuf>> {
    let prefix = megatron_prefix(dst);
    let (bin, idx) = (suffixed(&prefix, ".bin"), suffixed(&prefix, ".idx"));
    let dir = match prefix.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).at(&dir)?;
    let _lock = TargetLock::file(&prefix, "convert")?;
    for p in [&bin, &idx] {
        if p.exists() && !overwrite {
            return Err(Error::AlreadyExists { path: p.clone() });
        }
    }
    let base = prefix
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pid = std::process::id();
    let tmp_bin = dir.join(format!(".tmp.{base}.bin.{pid}"));
    let tmp_idx = dir.join(format!(".tmp.{base}.idx.{pid}"));
    let mut cleanup = Cleanup(vec![tmp_bin.clone(), tmp_idx.clone()]);

    let dtype = ds.dtype();
    let mut lengths = Vec::with_capacity(ds.num_docs() as usize);
    let mut out = BufWriter::with_capacity(1 << 20, create_new(&tmp_bin)?);
    for_each_doc(ds, progress, |i, doc| {
        // Megatron stores 32-bit tokens as int32.
        if dtype == DType::U32 {
            if let Some((_, v)) = doc.first_at_or_above(1 << 31) {
                return Err(Error::invalid(
                    "to",
                    format!(
                        "document {i} holds token {v}, which Megatron's int32 tokens cannot hold; keep this data in the tokenloom format"
                    ),
                ));
            }
        }
        out.write_all(doc.as_bytes()).at(&tmp_bin)?;
        lengths.push(doc.len() as u64);
        Ok(())
    })?;
    let file = out
        .into_inner()
        .map_err(|e| Error::io(&tmp_bin, e.into_error()))?;
    file.sync_all().at(&tmp_bin)?;
    drop(file);
    let encoded = megatron::encode(dtype, &lengths, &idx)?;
    let mut f = create_new(&tmp_idx)?;
    f.write_all(&encoded).at(&tmp_idx)?;
    f.sync_all().at(&tmp_idx)?;
    drop(f);
    progress.check()?;
    // The note first (it names the counts of the pair it describes, so it
    // is not used for the old pair), then the data; the index is renamed
    // last: it is what readers look for first.
    let m = ds.manifest();
    let meta = megatron::Meta {
        eos_id: m.eos_id,
        vocab_size: m.vocab_size,
        tokenizer: m.tokenizer.clone(),
        ..megatron::Meta::new(ds.num_docs(), ds.num_tokens())
    };
    let meta_path = megatron::meta_path(&bin);
    if meta.is_empty() {
        match fs::remove_file(&meta_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(&meta_path, e))
            }
            _ => {}
        }
    } else {
        let text = serde_json::to_vec_pretty(&meta)
            .map_err(|e| Error::invalid("metadata", e.to_string()))?;
        let name = meta_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        write_atomic(&dir.join(format!(".tmp.{name}.{pid}")), &meta_path, &text)?;
    }
    fs::rename(&tmp_bin, &bin).at(&bin)?;
    fs::rename(&tmp_idx, &idx).at(&idx)?;
    cleanup.0.clear();
    fsync_dir(&dir)?;
    Ok(vec![bin, idx])
}
