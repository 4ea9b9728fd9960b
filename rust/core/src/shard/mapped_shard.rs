//! One shard of a dataset: its `.idx` and `.bin` mapped read-only, checked
//! against each other on open; every document access checks its own offsets.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::compat::{self, Source};
use super::dtype::{DType, TokenBuf, Tokens};
use super::index::{IndexHeader, IndexView, Layout};
use crate::error::{Error, IoContext, Result};
use crate::io::MappedFile;

/// How long a shard found unchanged on disk stays trusted by
/// [`Shard::check_unchanged_lately`].
pub const RECHECK_AFTER: Duration = Duration::from_millis(1);

/// Nanoseconds since the first call in this process.
fn monotonic_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// One opened shard.
#[derive(Debug)]
pub struct Shard {
    /// Path of the `.bin`.
    pub bin_path: PathBuf,
    /// Path of the `.idx`.
    pub idx_path: PathBuf,
    pub(super) bin: Arc<MappedFile>,
    pub(super) idx: Arc<MappedFile>,
    pub(super) header: IndexHeader,
    pub(super) dtype: DType,
    pub(super) layout: Layout,
    /// xxh3 of a foreign index (which records no checksum), computed on
    /// first use by [`Dataset::fingerprint`].
    pub(super) index_hash: OnceLock<u64>,
    /// When the files were last found unchanged (see [`Shard::check_unchanged_lately`]).
    checked_at: AtomicU64,
    /// Whether the `.bin` is mapped; `false` for a shard opened by
    /// [`Shard::open_index_only`], whose tokens cannot be read.
    resident: bool,
}

impl Shard {
    /// Maps a `.bin`/`.idx` pair and checks they agree with each other and
    /// with `expect` (documents, tokens) when given.
    pub fn open(
        bin_path: PathBuf,
        idx_path: PathBuf,
        dtype: DType,
        expect: Option<(u64, u64)>,
    ) -> Result<Self> {
        let idx = MappedFile::open(&idx_path)?;
        let view = IndexView::parse(idx.bytes(), &idx_path)?;
        let h = view.header;
        if h.dtype != dtype {
            return Err(Error::corrupt(
                &idx_path,
                12,
                format!("index dtype is {} but the dataset is {dtype}", h.dtype),
                "the shard belongs to another dataset; restore the matching .idx/.bin pair",
            ));
        }
        if let Some((docs, tokens)) = expect {
            if h.bin_offset != 0 {
                return Err(Error::corrupt(
                    &idx_path,
                    32,
                    format!(
                        "token data offset is {} (dataset shards have none)",
                        h.bin_offset
                    ),
                    "the index is damaged; restore the dataset from a good copy or rebuild it",
                ));
            }
            if h.num_docs != docs || h.num_tokens != tokens {
                return Err(Error::corrupt(
                    &idx_path,
                    16,
                    format!(
                        "index holds {} documents / {} tokens but the manifest says {docs} / {tokens}",
                        h.num_docs, h.num_tokens
                    ),
                    "the shard and manifest disagree; restore the dataset from a good copy or rebuild it",
                ));
            }
        }
        let bin_len = std::fs::metadata(&bin_path).at(&bin_path)?.len();
        let need = h
            .num_tokens
            .checked_mul(dtype.itemsize() as u64)
            .and_then(|b| b.checked_add(h.bin_offset));
        if need != Some(bin_len) {
            let at = need.map_or(bin_len, |n| n.min(bin_len));
            return Err(Error::corrupt(
                &bin_path,
                at,
                format!(
                    "token file has {bin_len} bytes but its index describes {} tokens of {dtype} ({} bytes){}",
                    h.num_tokens,
                    need.map_or_else(|| "overflow".into(), |n| n.to_string()),
                    if need.is_some_and(|n| n > bin_len) { "; the file is truncated" } else { "" }
                ),
                "restore the shard from a good copy, or rebuild the dataset",
            ));
        }
        if h.bin_offset % dtype.itemsize() as u64 != 0 {
            return Err(Error::corrupt(
                &idx_path,
                32,
                format!(
                    "token data offset {} is not a multiple of the token size",
                    h.bin_offset
                ),
                "rebuild the index with `tokenloom index`",
            ));
        }
        let bin = MappedFile::open(&bin_path)?;
        if bin.bytes().len() as u64 != bin_len {
            return Err(Error::corrupt(
                &bin_path,
                bin.bytes().len() as u64,
                "the token file changed size while being opened",
                "wait for the program writing it to finish, then open it again",
            ));
        }
        Ok(Shard {
            bin_path,
            idx_path,
            bin: Arc::new(bin),
            idx: Arc::new(idx),
            header: h,
            dtype,
            layout: Layout::Native,
            index_hash: OnceLock::new(),
            checked_at: AtomicU64::new(0),
            resident: true,
        })
    }

    /// Opens a token file and its index in the format `src` names (see
    /// [`compat::detect`]): the index is validated against the token file's
    /// size before the token file is mapped, so a truncated file is an error,
    /// never a fault on access.
    pub fn open_source(src: &Source) -> Result<Self> {
        let (bin_path, idx_path) = src.paths();
        if let Source::Indexed { bin, idx } = src {
            let map = MappedFile::open(idx)?;
            let dtype = IndexView::parse(map.bytes(), idx)?.header.dtype;
            return Self::open(bin.clone(), idx.clone(), dtype, None);
        }
        let bin_len = std::fs::metadata(bin_path).at(bin_path)?.len();
        let idx = MappedFile::open(idx_path)?;
        let (header, layout) = compat::parse(src, idx.bytes(), bin_len)?;
        let bin = MappedFile::open(bin_path)?;
        if bin.bytes().len() as u64 != bin_len {
            return Err(Error::corrupt(
                bin_path,
                bin.bytes().len() as u64,
                "the token file changed size while being opened",
                "wait for the program writing it to finish, then open it again",
            ));
        }
        Ok(Shard {
            bin_path: bin_path.to_path_buf(),
            idx_path: idx_path.to_path_buf(),
            bin: Arc::new(bin),
            idx: Arc::new(idx),
            header,
            dtype: header.dtype,
            layout,
            index_hash: OnceLock::new(),
            checked_at: AtomicU64::new(0),
            resident: true,
        })
    }

    /// Maps only the `.idx` of a dataset shard whose `.bin` is not on local
    /// disk (a remote dataset's shard outside the cache): documents can be
    /// located and measured, and reading their tokens is an error.
    pub fn open_index_only(
        bin_path: PathBuf,
        idx_path: PathBuf,
        dtype: DType,
        expect: (u64, u64),
    ) -> Result<Self> {
        let idx = MappedFile::open(&idx_path)?;
        let header = IndexView::parse(idx.bytes(), &idx_path)?.header;
        let (docs, tokens) = expect;
        if header.dtype != dtype
            || header.bin_offset != 0
            || header.num_docs != docs
            || header.num_tokens != tokens
        {
            return Err(Error::corrupt(
                &idx_path,
                12,
                format!(
                    "index holds {} documents / {} tokens of {} but the manifest says {docs} / {tokens} of {dtype}",
                    header.num_docs, header.num_tokens, header.dtype
                ),
                "the shard and manifest disagree; restore the dataset from a good copy or rebuild it",
            ));
        }
        Ok(Shard {
            bin: Arc::new(MappedFile::absent(&bin_path)),
            bin_path,
            idx_path,
            idx: Arc::new(idx),
            header,
            dtype,
            layout: Layout::Native,
            index_hash: OnceLock::new(),
            checked_at: AtomicU64::new(0),
            resident: false,
        })
    }

    /// This shard with its token file `bin` (the `.bin` of this shard,
    /// mapped by the caller), sharing the index map: how a remote dataset's
    /// cache makes a fetched shard readable. Its size is checked against the
    /// index.
    pub fn with_body(&self, bin: Arc<MappedFile>) -> Result<Self> {
        let need = self.num_tokens() * self.dtype.itemsize() as u64 + self.header.bin_offset;
        let len = bin.bytes().len() as u64;
        if len != need {
            return Err(Error::corrupt(
                bin.path(),
                len.min(need),
                format!("token file has {len} bytes but its index describes {need}"),
                "restore the shard from a good copy, or rebuild the dataset",
            ));
        }
        Ok(Shard {
            bin_path: self.bin_path.clone(),
            idx_path: self.idx_path.clone(),
            bin,
            idx: Arc::clone(&self.idx),
            header: self.header,
            dtype: self.dtype,
            layout: self.layout,
            index_hash: self.index_hash.clone(),
            checked_at: AtomicU64::new(0),
            resident: true,
        })
    }

    /// Whether the shard's tokens are mapped (always, except for shards
    /// opened by [`open_index_only`](Self::open_index_only)).
    pub fn is_resident(&self) -> bool {
        self.resident
    }

    /// The validated index of this shard.
    pub fn index(&self) -> IndexView<'_> {
        // `header` and `layout` were parsed from these very bytes on open.
        IndexView::from_parsed(self.idx.bytes(), self.header, self.layout)
    }

    /// Where this shard's index keeps document boundaries (tokenloom's own
    /// `.idx`, or a foreign layout read in place).
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The raw bytes of the `.idx` file.
    pub fn index_bytes(&self) -> &[u8] {
        self.idx.bytes()
    }

    /// Documents in the shard.
    pub fn num_docs(&self) -> u64 {
        self.header.num_docs
    }

    /// Tokens in the shard.
    pub fn num_tokens(&self) -> u64 {
        self.header.num_tokens
    }

    /// All token bytes of the shard (after any header).
    pub fn token_bytes(&self) -> &[u8] {
        let start = self.header.bin_offset as usize;
        let end = start + self.num_tokens() as usize * self.dtype.itemsize();
        // Empty for a shard that is not resident (sizes are checked on open otherwise).
        self.bin.bytes().get(start..end).unwrap_or(&[])
    }

    /// Tokens `[start, end)` of the shard.
    pub fn tokens(&self, start: u64, end: u64) -> Tokens<'_> {
        let size = self.dtype.itemsize();
        let bytes = self
            .token_bytes()
            .get(start as usize * size..end as usize * size)
            .unwrap_or(&[]);
        Tokens::from_bytes(self.dtype, bytes).unwrap_or(match self.dtype {
            DType::U16 => Tokens::U16(&[]),
            DType::U32 => Tokens::U32(&[]),
        })
    }

    /// Tokens `[start, end)` of the shard copied into `buf` by positioned
    /// reads of the token file (not from the map): a file truncated by
    /// another program meanwhile is an error naming it, never a fault. The
    /// reading paths that copy (the batch loader, verify, convert, ordering)
    /// use this; zero-copy views come from [`tokens`](Self::tokens).
    pub fn read_tokens<'b>(
        &self,
        start: u64,
        end: u64,
        buf: &'b mut TokenBuf,
    ) -> Result<Tokens<'b>> {
        if start > end || end > self.num_tokens() {
            return Err(Error::invalid(
                "tokens",
                format!(
                    "tokens {start}..{end} are outside the shard's {} tokens",
                    self.num_tokens()
                ),
            ));
        }
        self.check_resident()?;
        let size = self.dtype.itemsize() as u64;
        let at = self.header.bin_offset + start * size;
        buf.fill_with(self.dtype, (end - start) as usize, |bytes| {
            self.bin.read_at(at, bytes)
        })
    }

    /// Fails for a shard whose tokens are not on local disk.
    fn check_resident(&self) -> Result<()> {
        if self.resident {
            return Ok(());
        }
        Err(Error::invalid(
            "shard",
            format!(
                "{} is not in the local cache; read a remote dataset through its loader or `open_dataset`, which fetch shards before reading them",
                self.bin_path.display()
            ),
        ))
    }

    /// The `.idx` bytes read into memory (see [`MappedFile::read_all`]).
    pub fn index_copy(&self) -> Result<Vec<u8>> {
        self.idx.read_all()
    }

    /// Document `j` of the shard.
    pub fn doc(&self, j: u64) -> Result<Tokens<'_>> {
        self.check_resident()?;
        let (s, e) = self.index().doc_range(j as usize, &self.idx_path)?;
        Ok(self.tokens(s, e))
    }

    /// Hints the kernel that documents will be read at random.
    pub fn advise_random(&self) {
        self.bin.advise_random();
    }

    /// Fails when the shard's `.idx` or `.bin` was truncated or rewritten in
    /// place since it was opened (see [`MappedFile::check_unchanged`]);
    /// readers call it before touching the shard's pages.
    pub fn check_unchanged(&self) -> Result<()> {
        self.idx.check_unchanged()?;
        self.bin.check_unchanged()
    }

    /// [`check_unchanged`](Self::check_unchanged) at most once per
    /// [`RECHECK_AFTER`]: for single-document reads, which take a tenth of a
    /// `stat`. A change is reported by the first read after that interval.
    pub fn check_unchanged_lately(&self) -> Result<()> {
        let now = monotonic_ns();
        let last = self.checked_at.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < RECHECK_AFTER.as_nanos() as u64 {
            return Ok(());
        }
        self.check_unchanged()?;
        self.checked_at.store(now.max(1), Ordering::Relaxed);
        Ok(())
    }
}
