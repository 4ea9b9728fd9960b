//! Opening a dataset: the manifest, then each shard's `.idx` and `.bin`
//! mapped read-only. Opening is O(shards): headers, sizes and the first and
//! last offsets are checked; every document access checks its own offsets.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::compat;
use super::dtype::{DType, TokenBuf, Tokens};
use super::index::Layout;
use super::manifest::{Manifest, ShardEntry, FILE_NAME};
pub use super::mapped_shard::Shard;
use crate::error::{Error, IoContext, Result};
use crate::io::MappedFile;

/// An opened dataset.
#[derive(Debug)]
pub struct Dataset {
    root: PathBuf,
    /// Shared with the dataset's views (see [`Dataset::view`]).
    manifest: Arc<Manifest>,
    /// Shared with the dataset's views.
    shards: Vec<Arc<Shard>>,
    /// `doc_starts[s]` is the global id of shard `s`'s first document; one
    /// extra entry holds the total.
    doc_starts: Vec<u64>,
    /// `token_starts[s]` is the position of shard `s`'s first token in the
    /// concatenated stream; one extra entry holds the total.
    token_starts: Vec<u64>,
    /// Where shards that are not mapped come from (see [`Dataset::open_index_only`]).
    provider: Option<Arc<dyn ShardProvider>>,
}

impl Dataset {
    /// Opens the dataset directory `root` (the directory holding `manifest.json`).
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if root.is_dir() && !root.join(FILE_NAME).exists() {
            if let Some(ds) = Self::open_datatrove_folder(&root)? {
                return Ok(ds);
            }
        }
        if !root.is_dir() {
            if let Some(src) = compat::detect(&root)? {
                let shard = Shard::open_source(&src)?;
                let home = src.paths().0.parent().map(Path::to_path_buf);
                let mut ds = Self::from_shards(home.unwrap_or_default(), vec![Arc::new(shard)])?;
                if let compat::Source::Megatron { bin, .. } = &src {
                    let (docs, tokens) = (ds.num_docs(), ds.num_tokens());
                    if let Some(meta) = compat::megatron::Meta::read(bin, docs, tokens, ds.dtype())?
                    {
                        let m = Arc::make_mut(&mut ds.manifest);
                        m.eos_id = meta.eos_id;
                        m.vocab_size = meta.vocab_size;
                        m.tokenizer = meta.tokenizer;
                    }
                }
                return Ok(ds);
            }
            if root.is_file() {
                return Err(Error::invalid(
                    "path",
                    format!(
                        "{} is a file without an index beside it; run `tokenloom index {} --dtype u16 --eos ID` first, or pass a dataset directory (holding {FILE_NAME}), a Megatron .bin/.idx (or their path prefix) or a datatrove .ds",
                        root.display(),
                        root.display()
                    ),
                ));
            }
        }
        let manifest = Manifest::load(&root)?;
        if let Some(c) = manifest.compression {
            return Err(Error::invalid(
                "path",
                format!(
                    "{}: the shard bodies are {}-compressed; open it with tokenloom.open_dataset, TokenDataset or the tokenloom command, which decompress them into the local cache",
                    root.display(),
                    c.name()
                ),
            ));
        }
        Self::open_manifest(root, manifest, true)
    }

    /// Opens a dataset directory whose manifest is `manifest` from its
    /// indexes alone (see [`Shard::open_index_only`]): documents can be
    /// located and measured, and tokens are read from views that map the
    /// shards (see [`view`](Self::view)) made by the dataset's
    /// [`provider`](Self::provider). How a remote dataset's cache opens it.
    pub fn open_index_only(root: impl AsRef<Path>, manifest: Manifest) -> Result<Self> {
        Self::open_manifest(root.as_ref().to_path_buf(), manifest, false)
    }

    /// This dataset read through `provider` (see [`open_index_only`](Self::open_index_only)).
    pub fn with_provider(mut self, provider: Arc<dyn ShardProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    fn open_manifest(root: PathBuf, manifest: Manifest, resident: bool) -> Result<Self> {
        let mut shards = Vec::with_capacity(manifest.shards.len());
        let mut doc_starts = Vec::with_capacity(manifest.shards.len() + 1);
        let mut total = 0u64;
        for e in &manifest.shards {
            let (bin, idx) = (root.join(&e.bin), root.join(&e.idx));
            let expect = (e.num_docs, e.num_tokens);
            let shard = if resident {
                Shard::open(bin, idx, manifest.dtype, Some(expect))?
            } else {
                Shard::open_index_only(bin, idx, manifest.dtype, expect)?
            };
            doc_starts.push(total);
            total += e.num_docs;
            shards.push(Arc::new(shard));
        }
        doc_starts.push(total);
        let token_starts = token_starts(&shards);
        Ok(Dataset {
            root,
            manifest: Arc::new(manifest),
            shards,
            doc_starts,
            token_starts,
            provider: None,
        })
    }

    /// A view of this dataset in which shard `s` reads its tokens from
    /// `bin` for every `(s, bin)` of `bodies` (maps of their `.bin` files),
    /// the other shards as they are here. Shares the manifest, indexes and
    /// maps: O(shards) pointer copies. Views have no provider.
    pub fn view(&self, bodies: &[(usize, Arc<MappedFile>)]) -> Result<Self> {
        let mut shards = self.shards.clone();
        for (s, bin) in bodies {
            let shard = shards.get_mut(*s).ok_or_else(|| {
                Error::invalid(
                    "shard",
                    format!("shard {s} is out of range ({} shards)", self.shards.len()),
                )
            })?;
            *shard = Arc::new(shard.with_body(Arc::clone(bin))?);
        }
        Ok(Dataset {
            root: self.root.clone(),
            manifest: Arc::clone(&self.manifest),
            shards,
            doc_starts: self.doc_starts.clone(),
            token_starts: self.token_starts.clone(),
            provider: None,
        })
    }

    /// Opens every `*.ds` file of a directory (datatrove's output folder)
    /// as the shards of one dataset, in file-name order; `None` when the
    /// directory holds no `.ds` file.
    fn open_datatrove_folder(dir: &Path) -> Result<Option<Self>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .at(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "ds") && p.is_file())
            .collect();
        if files.is_empty() {
            return Ok(None);
        }
        files.sort();
        let shards = files
            .into_iter()
            .map(|ds| Shard::open_source(&compat::datatrove_source(ds)).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        Self::from_shards(dir.to_path_buf(), shards).map(Some)
    }

    /// A dataset of shards opened outside a manifest (raw indexed files and
    /// foreign formats); they must share one dtype.
    fn from_shards(root: PathBuf, shards: Vec<Arc<Shard>>) -> Result<Self> {
        let dtype = shards.first().map_or(DType::U16, |s| s.dtype);
        let name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let mut manifest = Manifest::new(dtype);
        let mut doc_starts = vec![0];
        for s in &shards {
            if s.dtype != dtype {
                return Err(Error::corrupt(
                    &s.bin_path,
                    0,
                    format!(
                        "tokens are {} but {} holds {dtype} tokens; a dataset has one token type",
                        s.dtype,
                        shards[0].bin_path.display()
                    ),
                    "open the files separately, or convert them to one dtype with `tokenloom convert`",
                ));
            }
            manifest.num_docs += s.num_docs();
            manifest.num_tokens += s.num_tokens();
            doc_starts.push(manifest.num_docs);
            manifest.shards.push(ShardEntry {
                bin: name(&s.bin_path),
                idx: name(&s.idx_path),
                num_docs: s.num_docs(),
                num_tokens: s.num_tokens(),
                ..ShardEntry::default()
            });
        }
        let token_starts = token_starts(&shards);
        Ok(Dataset {
            root,
            manifest: Arc::new(manifest),
            shards,
            doc_starts,
            token_starts,
            provider: None,
        })
    }

    /// Where the shards that are not mapped are read from (a remote
    /// dataset's cache); `None` for a dataset on local disk.
    pub fn provider(&self) -> Option<&Arc<dyn ShardProvider>> {
        self.provider.as_ref()
    }

    /// The dataset directory (for an indexed raw file, its directory).
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// The opened shards.
    pub fn shards(&self) -> &[Arc<Shard>] {
        &self.shards
    }
    /// Number of documents.
    pub fn num_docs(&self) -> u64 {
        self.manifest.num_docs
    }
    /// Number of tokens.
    pub fn num_tokens(&self) -> u64 {
        self.manifest.num_tokens
    }
    /// Token dtype.
    pub fn dtype(&self) -> DType {
        self.manifest.dtype
    }

    /// Shard and local index of global document `i`: O(log shards).
    pub fn locate(&self, i: u64) -> Result<(usize, u64)> {
        if i >= self.num_docs() {
            return Err(Error::InvalidArgument {
                name: "index".into(),
                reason: format!(
                    "document {i} is out of range (the dataset has {} documents)",
                    self.num_docs()
                ),
            });
        }
        let s = self.doc_starts.partition_point(|&start| start <= i) - 1;
        Ok((s, i - self.doc_starts[s]))
    }

    /// Document `i`, borrowed from the map (zero-copy). Readers that may
    /// outlive other programs' edits of the files call
    /// [`check_unchanged`](Self::check_unchanged) first (the batch loader
    /// does, once per batch and shard), or use [`doc_checked`](Self::doc_checked).
    pub fn doc(&self, i: u64) -> Result<Tokens<'_>> {
        let (s, j) = self.locate(i)?;
        self.shards[s].doc(j)
    }

    /// Document `i` after checking that its shard's files are unchanged on
    /// disk: a shard truncated by another program is an error, not a fault.
    /// (Checked at most once a millisecond
    /// per shard: a read takes a tenth of the check.)
    pub fn doc_checked(&self, i: u64) -> Result<Tokens<'_>> {
        let (s, j) = self.locate(i)?;
        self.shards[s].check_unchanged_lately()?;
        self.shards[s].doc(j)
    }

    /// Document `i` copied into `buf` by positioned reads of its shard's
    /// token file: a truncation by another program is an error, never a
    /// fault (see [`Shard::read_tokens`]).
    pub fn read_doc<'b>(&self, i: u64, buf: &'b mut TokenBuf) -> Result<Tokens<'b>> {
        let (s, j) = self.locate(i)?;
        let shard = &self.shards[s];
        let (start, end) = shard.index().doc_range(j as usize, &shard.idx_path)?;
        shard.read_tokens(start, end, buf)
    }

    /// Where tokens `[start, start + len)` of document `i` lie: the shard
    /// and the token range inside it; `None` when the document is shorter.
    pub fn piece_span(&self, i: u64, start: u64, len: u64) -> Result<Option<(usize, u64, u64)>> {
        let (s, j) = self.locate(i)?;
        let shard = &self.shards[s];
        let (a, b) = shard.index().doc_range(j as usize, &shard.idx_path)?;
        Ok(match start.checked_add(len) {
            Some(end) if end <= b - a => Some((s, a + start, a + end)),
            _ => None,
        })
    }

    /// Fails when a file of shard `s` was truncated or rewritten in place
    /// since the dataset was opened; see [`Shard::check_unchanged`].
    pub fn check_unchanged(&self, s: usize) -> Result<()> {
        self.shards
            .get(s)
            .map_or(Ok(()), |shard| shard.check_unchanged())
    }

    /// The shards holding tokens `first..=last` of the concatenated stream
    /// (and any empty shards between them), from in-memory headers alone.
    pub fn shards_of_tokens(&self, first: u64, last: u64) -> std::ops::Range<usize> {
        let of = |t: u64| {
            self.token_starts[1..]
                .partition_point(|&end| end <= t)
                .min(self.shards.len().saturating_sub(1))
        };
        if self.shards.is_empty() {
            return 0..0;
        }
        of(first)..of(last.max(first)) + 1
    }

    /// Length of every document, in order. O(documents).
    pub fn doc_lengths(&self) -> Result<Vec<u64>> {
        let mut out = Vec::with_capacity(self.num_docs() as usize);
        for s in &self.shards {
            s.check_unchanged()?;
            s.index().doc_lengths_into(&mut out, &s.idx_path)?;
        }
        Ok(out)
    }

    /// Hints the kernel that documents will be read at random.
    pub fn advise_random(&self) {
        self.shards.iter().for_each(|s| s.advise_random());
    }

    /// Global document holding token `t` of the concatenated token stream
    /// and `t`'s offset inside it: O(log shards + log docs). Empty documents
    /// are skipped: the result is the document whose range contains `t`.
    pub fn locate_token(&self, t: u64) -> Result<(u64, u64)> {
        if t >= self.num_tokens() {
            return Err(Error::invalid(
                "token",
                format!(
                    "position {t} is past the end (the dataset has {} tokens)",
                    self.num_tokens()
                ),
            ));
        }
        let mut base = 0u64;
        for (s, shard) in self.shards.iter().enumerate() {
            let n = shard.num_tokens();
            if t >= base + n {
                base += n;
                continue;
            }
            let local = t - base;
            let index = shard.index();
            // Last document whose start is <= local, then past empty ones.
            let (mut lo, mut hi) = (0usize, shard.num_docs() as usize);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if index.offset(mid) <= local {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            let (start, end) = index.doc_range(lo, &shard.idx_path)?;
            if local < start || local >= end {
                return Err(Error::corrupt(
                    &shard.idx_path,
                    index.offset_pos(lo),
                    format!("offsets are not sorted around document {lo}"),
                    "the index is damaged; run `tokenloom verify` and rebuild or restore the shard",
                ));
            }
            return Ok((self.doc_starts[s] + lo as u64, local - start));
        }
        Err(Error::invalid(
            "token",
            format!("position {t} is past the end"),
        ))
    }

    /// A 64-bit fingerprint of the dataset's content: per shard, the token
    /// checksum, the counts, the dtype and the document boundaries (the
    /// index's own checksum, or for foreign indexes, which record none, a
    /// hash of their bytes). Plans, orders and loader states carry it: a
    /// dataset rewritten with other boundaries, even over the same tokens,
    /// has another fingerprint, so its stale plans are rebuilt and its
    /// orders refused. O(shards) for tokenloom indexes.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint_of(true)
    }

    /// The fingerprint that orders and loader states written before
    /// [`Dataset::fingerprint`] covered document boundaries carry: the same
    /// without the boundaries of tokenloom shards. Such files are still
    /// accepted when it matches (they cannot tell boundaries apart; saved
    /// again, they get the full check).
    pub fn legacy_fingerprint(&self) -> u64 {
        self.fingerprint_of(false)
    }

    fn fingerprint_of(&self, native_boundaries: bool) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for s in &self.shards {
            h.update(&s.header.bin_xxh3.to_le_bytes());
            h.update(&s.header.num_docs.to_le_bytes());
            h.update(&s.header.num_tokens.to_le_bytes());
            h.update(&s.header.dtype.code().to_le_bytes());
            let boundaries = if s.layout != Layout::Native {
                Some(
                    *s.index_hash
                        .get_or_init(|| xxhash_rust::xxh3::xxh3_64(s.idx.bytes())),
                )
            } else if native_boundaries {
                // The trailer: xxh3 of the header and every offset.
                Some(s.index().stored_checksum())
            } else {
                None
            };
            if let Some(b) = boundaries {
                h.update(&b.to_le_bytes());
            }
        }
        h.digest()
    }
}

/// Prefix sums of the shards' token counts, with the total last.
fn token_starts(shards: &[Arc<Shard>]) -> Vec<u64> {
    let mut out = Vec::with_capacity(shards.len() + 1);
    let mut total = 0u64;
    out.push(0);
    for s in shards {
        total += s.num_tokens();
        out.push(total);
    }
    out
}

// Datasets whose shard bodies are not all on local disk (a remote dataset
// behind a bounded cache) are opened from their manifest and indexes alone,
// and readers ask the dataset's [`ShardProvider`] for a view in which the
// shards they are about to read are mapped. The provider hands out datasets
// and a dataset holds its provider: one concern, kept in one file.

/// Makes shard bodies readable on demand.
pub trait ShardProvider: Send + Sync + std::fmt::Debug {
    /// A view of the dataset in which every shard of `shards` is mapped.
    /// They stay on local disk (are not evicted) until [`release`](Self::release)
    /// is called with the same list; the view's maps stay valid as long as
    /// the view lives, whatever happens to the files.
    fn acquire(&self, shards: &[usize]) -> Result<Arc<Dataset>>;
    /// Ends an [`acquire`](Self::acquire) of `shards`.
    fn release(&self, shards: &[usize]);
    /// Shards that upcoming reads need, soonest first: fetched in the
    /// background, so that a later `acquire` does not wait.
    fn prefetch(&self, shards: &[usize]);
    /// How many batches ahead of the current one a loader thread announces
    /// through [`prefetch`](Self::prefetch).
    fn lookahead(&self) -> usize;
    /// What the provider can hold on local disk.
    fn capacity(&self) -> Capacity;
}

/// What a [`ShardProvider`] can hold on local disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Bytes it may hold in all (a cache's limit).
    pub limit: u64,
    /// Bytes it holds besides the shard bodies (a remote dataset's manifest
    /// and indexes).
    pub fixed: u64,
}

/// Shards acquired from a provider, released when dropped.
pub struct Acquired {
    provider: Arc<dyn ShardProvider>,
    shards: Vec<usize>,
    view: Arc<Dataset>,
}

impl Acquired {
    /// Acquires `shards` (sorted, without repeats) from `provider`.
    pub fn new(provider: Arc<dyn ShardProvider>, shards: Vec<usize>) -> Result<Self> {
        let view = provider.acquire(&shards)?;
        Ok(Acquired {
            provider,
            shards,
            view,
        })
    }

    /// The view in which the acquired shards are mapped.
    pub fn view(&self) -> &Arc<Dataset> {
        &self.view
    }
}

impl Drop for Acquired {
    fn drop(&mut self) {
        self.provider.release(&self.shards);
    }
}
