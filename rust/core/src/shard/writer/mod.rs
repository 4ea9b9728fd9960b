//! Streaming, atomic dataset writer.
//!
//! Shards are written under temporary names, fsynced, then renamed to names
//! that carry the dataset's new generation; `manifest.json` is replaced last
//! by an atomic rename, which is the commit point. A crash or an abort at
//! any moment leaves the previous manifest, and so the previous dataset,
//! intact; files of the unfinished generation are never listed by any
//! manifest and are removed by the next successful write.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use super::blocks::{self, BlockHasher, BLOCK_BYTES};
use super::compression::{stored_name, BodySink, Compression};
use super::dtype::{DType, Tokens};
use super::generation::{prepare_root, remove_unlisted};
use super::index::{self, IndexHeader};
use super::lock::TargetLock;
use super::manifest::{Manifest, ShardEntry, FILE_NAME};
use super::names::{shard_name, TMP_PREFIX};
use crate::error::{Error, IoContext, Result};
use crate::hash::hex;
use crate::io::{create_new, fsync_dir, write_atomic};

mod options;
pub use options::{TokenInt, WriterOptions, DEFAULT_SHARD_BYTES};

struct OpenShard {
    number: usize,
    tmp_bin: PathBuf,
    file: BodySink,
    hasher: Xxh3,
    blocks: BlockHasher,
    offsets: Vec<u64>,
}

impl OpenShard {
    fn tokens(&self) -> u64 {
        self.offsets.last().copied().unwrap_or(0)
    }
}

/// Writes a dataset directory; see the module documentation for atomicity.
pub struct DatasetWriter {
    root: PathBuf,
    opts: WriterOptions,
    manifest: Manifest,
    cur: Option<OpenShard>,
    /// Final-named files of this generation, removed again on abort.
    written: Vec<PathBuf>,
    created_dir: bool,
    /// The directory's lock, held from `create` until commit or abort.
    lock: Option<TargetLock>,
    done: bool,
    buf16: Vec<u16>,
    buf32: Vec<u32>,
}

impl DatasetWriter {
    /// Starts writing a dataset at `root`. Fails if a dataset is already
    /// there, unless `opts.overwrite`, and when another writer is writing
    /// there (the directory is locked until this writer commits or aborts).
    pub fn create(root: impl AsRef<Path>, opts: WriterOptions) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let limit = opts.dtype.max_token() + 1;
        if opts.vocab_size.is_some_and(|v| v == 0 || v > limit) {
            return Err(Error::invalid(
                "vocab_size",
                format!(
                    "{} does not fit dtype {} (at most {limit}); use dtype \"u32\" for larger vocabularies",
                    opts.vocab_size.unwrap_or(0),
                    opts.dtype
                ),
            ));
        }
        if let Some(eos) = opts.eos_id {
            let bound = opts.vocab_size.unwrap_or(limit);
            if eos >= bound {
                return Err(Error::invalid(
                    "eos_id",
                    format!("{eos} must be below {bound} (vocab_size or dtype range)"),
                ));
            }
        }
        if opts.shard_bytes < opts.dtype.itemsize() as u64 {
            return Err(Error::invalid(
                "shard_bytes",
                "must hold at least one token",
            ));
        }
        let prepared = prepare_root(&root, opts.overwrite, "DatasetWriter")?;
        let mut manifest = Manifest::new(opts.dtype);
        manifest.generation = prepared.generation;
        manifest.eos_id = opts.eos_id;
        manifest.vocab_size = opts.vocab_size;
        manifest.tokenizer = opts.tokenizer.clone();
        Ok(DatasetWriter {
            root,
            opts,
            manifest,
            cur: None,
            written: Vec::new(),
            created_dir: prepared.created_dir,
            lock: Some(prepared.lock),
            done: false,
            buf16: Vec::new(),
            buf32: Vec::new(),
        })
    }

    /// The dataset directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Documents added so far.
    pub fn num_docs(&self) -> u64 {
        self.manifest.num_docs + self.cur.as_ref().map_or(0, |c| c.offsets.len() as u64 - 1)
    }

    /// Stores shard bodies compressed (`Some`) or plain (`None`, the
    /// default); only before the first document is added.
    pub fn set_compression(&mut self, compression: Option<Compression>) -> Result<()> {
        if self.cur.is_some() || !self.manifest.shards.is_empty() {
            return Err(Error::invalid(
                "compression",
                "set it before adding documents",
            ));
        }
        self.manifest.compression = compression;
        Ok(())
    }

    /// Tokens added so far.
    pub fn num_tokens(&self) -> u64 {
        self.manifest.num_tokens + self.cur.as_ref().map_or(0, OpenShard::tokens)
    }

    fn check_tokens<T: TokenInt>(&self, doc: &[T], first_doc: u64, lengths: &[u64]) -> Result<()> {
        let limit = self
            .opts
            .vocab_size
            .unwrap_or(self.opts.dtype.max_token() + 1);
        // A vectorised any-test per block; the exact position only on failure.
        const BLOCK: usize = 4096;
        let Some(block) = doc
            .chunks(BLOCK)
            .position(|c| c.iter().fold(false, |bad, &t| bad | t.outside(limit)))
        else {
            return Ok(());
        };
        let pos = block * BLOCK
            + doc[block * BLOCK..]
                .iter()
                .position(|&t| t.outside(limit))
                .unwrap_or(0);
        // Name the document and position inside it.
        let (mut d, mut start) = (0usize, 0u64);
        while d < lengths.len() && start + lengths[d] <= pos as u64 {
            start += lengths[d];
            d += 1;
        }
        let value = doc[pos].to_i128();
        let what = if self.opts.vocab_size.is_some() {
            "vocab_size"
        } else {
            "the dtype's range"
        };
        Err(Error::invalid(
            "tokens",
            format!(
                "document {} has token {value} at position {}, outside [0, {limit}) ({what}); fix the tokenizer output, or raise vocab_size / use dtype \"u32\"",
                first_doc + d as u64,
                pos as u64 - start
            ),
        ))
    }

    /// Appends one document.
    pub fn add<T: TokenInt>(&mut self, doc: &[T]) -> Result<()> {
        self.add_many(doc, &[doc.len() as u64])
    }

    /// Appends several documents given as concatenated `tokens` and their
    /// `lengths` (which must sum to `tokens.len()`).
    pub fn add_many<T: TokenInt>(&mut self, tokens: &[T], lengths: &[u64]) -> Result<()> {
        self.ensure_open()?;
        let total: u64 = lengths
            .iter()
            .try_fold(0u64, |a, &l| a.checked_add(l))
            .unwrap_or(u64::MAX);
        if total != tokens.len() as u64 {
            return Err(Error::invalid(
                "lengths",
                format!(
                    "document lengths sum to {total} but {} tokens were given",
                    tokens.len()
                ),
            ));
        }
        self.check_tokens(tokens, self.num_docs(), lengths)?;
        // Documents go out in runs: all consecutive documents that fit the
        // current shard are converted, hashed and written in one pass.
        let size = self.opts.dtype.itemsize() as u64;
        let (mut run_start, mut at) = (0usize, 0usize);
        for &len in lengths {
            let len = len as usize;
            let shard_tokens = self.cur.as_ref().map_or(0, |c| c.tokens());
            if shard_tokens > 0 && (shard_tokens + len as u64) * size > self.opts.shard_bytes {
                self.write_run(&tokens[run_start..at])?;
                run_start = at;
                self.finish_shard()?;
            }
            if self.cur.is_none() {
                self.write_run(&tokens[run_start..at])?;
                run_start = at;
                self.open_shard()?;
            }
            at += len;
            if let Some(cur) = self.cur.as_mut() {
                let end = cur.tokens() + len as u64;
                cur.offsets.push(end);
            }
        }
        self.write_run(&tokens[run_start..at])
    }

    /// Converts `tokens` to the dataset's dtype and appends them to the
    /// current shard's file and checksum (its offsets are already recorded).
    fn write_run<T: TokenInt>(&mut self, tokens: &[T]) -> Result<()> {
        const PIECE: usize = 64 << 10;
        let Some(cur) = self.cur.as_mut() else {
            return Ok(());
        };
        for piece in tokens.chunks(PIECE) {
            let bytes: &[u8] = match self.opts.dtype {
                DType::U16 => {
                    self.buf16.clear();
                    self.buf16.extend(piece.iter().map(|&t| t.bits() as u16));
                    bytemuck::cast_slice(&self.buf16)
                }
                DType::U32 => {
                    self.buf32.clear();
                    self.buf32.extend(piece.iter().map(|&t| t.bits() as u32));
                    bytemuck::cast_slice(&self.buf32)
                }
            };
            cur.file.write_all(bytes).at(&cur.tmp_bin)?;
            cur.hasher.update(bytes);
            cur.blocks.update(bytes);
        }
        Ok(())
    }

    /// Appends one document of already-typed tokens (converted if the dtype differs).
    pub fn add_tokens(&mut self, doc: Tokens<'_>) -> Result<()> {
        match doc {
            Tokens::U16(t) => self.add(t),
            Tokens::U32(t) => self.add(t),
        }
    }

    fn ensure_open(&self) -> Result<()> {
        if self.done {
            return Err(Error::invalid(
                "writer",
                "it is already closed; open a new DatasetWriter",
            ));
        }
        Ok(())
    }

    fn open_shard(&mut self) -> Result<()> {
        let number = self.manifest.shards.len();
        let name = shard_name(number, self.manifest.generation, "bin");
        let name = stored_name(&name, self.manifest.compression);
        let tmp_bin = self.root.join(format!("{TMP_PREFIX}{name}"));
        let file = create_new(&tmp_bin)?;
        let file = BodySink::new(file, self.manifest.compression).at(&tmp_bin)?;
        self.cur = Some(OpenShard {
            number,
            tmp_bin,
            file,
            hasher: Xxh3::new(),
            blocks: BlockHasher::new(BLOCK_BYTES),
            offsets: vec![0],
        });
        Ok(())
    }

    fn finish_shard(&mut self) -> Result<()> {
        let Some(cur) = self.cur.take() else {
            return Ok(());
        };
        let tmp_bin = cur.tmp_bin.clone();
        // On failure (a full disk, most often) the shard's temporary file goes too.
        self.commit_shard(cur).inspect_err(|_| {
            let _ = fs::remove_file(&tmp_bin);
        })
    }

    fn commit_shard(&mut self, cur: OpenShard) -> Result<()> {
        let generation = self.manifest.generation;
        let file = cur.file.finish().at(&cur.tmp_bin)?;
        file.sync_all().at(&cur.tmp_bin)?;
        drop(file);
        let num_docs = cur.offsets.len() as u64 - 1;
        let num_tokens = cur.offsets.last().copied().unwrap_or(0);
        let bin_xxh3 = cur.hasher.digest();
        let header = IndexHeader {
            dtype: self.opts.dtype,
            num_docs,
            num_tokens,
            bin_offset: 0,
            bin_xxh3,
        };
        let idx_bytes = index::encode(&header, &cur.offsets);
        let bin_name = shard_name(cur.number, generation, "bin");
        let idx_name = shard_name(cur.number, generation, "idx");
        let bin_path = self
            .root
            .join(stored_name(&bin_name, self.manifest.compression));
        let idx_path = self.root.join(&idx_name);
        write_atomic(
            &self.root.join(format!("{TMP_PREFIX}{idx_name}")),
            &idx_path,
            &idx_bytes,
        )?;
        self.written.push(idx_path);
        fs::rename(&cur.tmp_bin, &bin_path).at(&bin_path)?;
        self.written.push(bin_path);
        self.manifest.shards.push(ShardEntry {
            bin: bin_name,
            idx: idx_name,
            num_docs,
            num_tokens,
            bin_xxh3: hex(bin_xxh3),
            idx_xxh3: hex(xxh3_64(&idx_bytes)),
            block_bytes: Some(BLOCK_BYTES),
            block_xxh3: blocks::encode(&cur.blocks.finish()),
        });
        self.manifest.num_docs += num_docs;
        self.manifest.num_tokens += num_tokens;
        Ok(())
    }

    /// Finishes the last shard and commits the dataset by writing its
    /// manifest; then removes the files of the dataset it replaced.
    pub fn close(&mut self) -> Result<Manifest> {
        self.ensure_open()?;
        let result = self.commit();
        if result.is_err() {
            self.abort();
        }
        result
    }

    fn commit(&mut self) -> Result<Manifest> {
        self.finish_shard()?;
        fsync_dir(&self.root)?;
        let bytes = self.manifest.to_bytes()?;
        let dest = self.root.join(FILE_NAME);
        write_atomic(
            &self.root.join(format!("{TMP_PREFIX}{FILE_NAME}")),
            &dest,
            &bytes,
        )?;
        fsync_dir(&self.root)?;
        self.done = true;
        remove_unlisted(&self.root, &self.manifest);
        self.lock = None;
        Ok(self.manifest.clone())
    }

    /// Drops everything written by this writer; the previous dataset, if
    /// any, stays as it was. Called automatically when a writer is dropped
    /// without [`close`](Self::close).
    pub fn abort(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(cur) = self.cur.take() {
            cur.file.discard(); // closed without flushing what is buffered
            let _ = fs::remove_file(&cur.tmp_bin);
        }
        for p in self.written.drain(..) {
            let _ = fs::remove_file(p);
        }
        self.lock = None;
        if self.created_dir {
            // Only succeeds if nothing else is in it.
            let _ = fs::remove_dir(&self.root);
        }
    }
}

impl Drop for DatasetWriter {
    fn drop(&mut self) {
        self.abort();
    }
}

#[cfg(test)]
mod tests;
