//! Opening a dataset: the manifest, then each shard's `.idx` and `.bin`
//! mapped read-only. Opening is O(shards): headers, sizes and the first and
//! last offsets are checked; every document access checks its own offsets.

use std::path::{Path, PathBuf};

use super::dtype::{DType, Tokens};
use super::fsutil::MappedFile;
use super::index::{IndexHeader, IndexView};
use super::manifest::{Manifest, ShardEntry, FILE_NAME};
use super::scan::{default_index_path, is_tokenloom_index};
use crate::error::{Error, IoContext, Result};

/// One opened shard.
#[derive(Debug)]
pub struct Shard {
    /// Path of the `.bin`.
    pub bin_path: PathBuf,
    /// Path of the `.idx`.
    pub idx_path: PathBuf,
    bin: MappedFile,
    idx: MappedFile,
    header: IndexHeader,
    dtype: DType,
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
        Ok(Shard {
            bin_path,
            idx_path,
            bin,
            idx,
            header: h,
            dtype,
        })
    }

    /// The validated index of this shard.
    pub fn index(&self) -> IndexView<'_> {
        // `header` was parsed from these very bytes in `open`.
        IndexView::from_parsed(self.idx.bytes(), self.header)
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
        &self.bin.bytes()[start..end]
    }

    /// Tokens `[start, end)` of the shard.
    pub fn tokens(&self, start: u64, end: u64) -> Tokens<'_> {
        let size = self.dtype.itemsize();
        let bytes = &self.token_bytes()[start as usize * size..end as usize * size];
        Tokens::from_bytes(self.dtype, bytes).unwrap_or(match self.dtype {
            DType::U16 => Tokens::U16(&[]),
            DType::U32 => Tokens::U32(&[]),
        })
    }

    /// Document `j` of the shard.
    pub fn doc(&self, j: u64) -> Result<Tokens<'_>> {
        let (s, e) = self.index().doc_range(j as usize, &self.idx_path)?;
        Ok(self.tokens(s, e))
    }

    /// Hints the kernel that documents will be read at random.
    pub fn advise_random(&self) {
        self.bin.advise_random();
    }
}

/// An opened dataset.
#[derive(Debug)]
pub struct Dataset {
    root: PathBuf,
    manifest: Manifest,
    shards: Vec<Shard>,
    /// `doc_starts[s]` is the global id of shard `s`'s first document; one
    /// extra entry holds the total.
    doc_starts: Vec<u64>,
}

impl Dataset {
    /// Opens the dataset directory `root` (the directory holding `manifest.json`).
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        if root.is_file() {
            return Self::open_indexed_file(root);
        }
        let manifest = Manifest::load(&root)?;
        let mut shards = Vec::with_capacity(manifest.shards.len());
        let mut doc_starts = Vec::with_capacity(manifest.shards.len() + 1);
        let mut total = 0u64;
        for e in &manifest.shards {
            let shard = Shard::open(
                root.join(&e.bin),
                root.join(&e.idx),
                manifest.dtype,
                Some((e.num_docs, e.num_tokens)),
            )?;
            doc_starts.push(total);
            total += e.num_docs;
            shards.push(shard);
        }
        doc_starts.push(total);
        Ok(Dataset {
            root,
            manifest,
            shards,
            doc_starts,
        })
    }

    /// Opens a raw token file indexed by `tokenloom index` (its `.idx` beside it)
    /// as a one-shard dataset.
    fn open_indexed_file(bin: PathBuf) -> Result<Self> {
        let idx = default_index_path(&bin);
        if !idx.exists() || !is_tokenloom_index(&idx)? {
            return Err(Error::invalid(
                "path",
                format!(
                    "{} is a file without a tokenloom index beside it; run `tokenloom index {} --dtype u16 --eos ID` first, or pass a dataset directory (holding {FILE_NAME})",
                    bin.display(),
                    bin.display()
                ),
            ));
        }
        let map = MappedFile::open(&idx)?;
        let header = IndexView::parse(map.bytes(), &idx)?.header;
        drop(map);
        let shard = Shard::open(bin.clone(), idx.clone(), header.dtype, None)?;
        let name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let mut manifest = Manifest::new(header.dtype);
        manifest.num_docs = header.num_docs;
        manifest.num_tokens = header.num_tokens;
        manifest.shards.push(ShardEntry {
            bin: name(&bin),
            idx: name(&idx),
            num_docs: header.num_docs,
            num_tokens: header.num_tokens,
            bin_xxh3: String::new(),
            idx_xxh3: String::new(),
        });
        let root = bin.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Dataset {
            root,
            manifest,
            shards: vec![shard],
            doc_starts: vec![0, header.num_docs],
        })
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
    pub fn shards(&self) -> &[Shard] {
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

    /// Document `i`, borrowed from the map (zero-copy).
    pub fn doc(&self, i: u64) -> Result<Tokens<'_>> {
        let (s, j) = self.locate(i)?;
        self.shards[s].doc(j)
    }

    /// Length of every document, in order. O(documents).
    pub fn doc_lengths(&self) -> Result<Vec<u64>> {
        let mut out = Vec::with_capacity(self.num_docs() as usize);
        for s in &self.shards {
            s.index().doc_lengths_into(&mut out, &s.idx_path)?;
        }
        Ok(out)
    }

    /// Hints the kernel that documents will be read at random.
    pub fn advise_random(&self) {
        self.shards.iter().for_each(Shard::advise_random);
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

    /// A 64-bit fingerprint of the dataset's content description: the
    /// manifest (with its checksums) or, for an indexed raw file, its index
    /// header. Plans and loader states carry it to detect a changed dataset.
    pub fn fingerprint(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for s in &self.shards {
            h.update(&s.header.bin_xxh3.to_le_bytes());
            h.update(&s.header.num_docs.to_le_bytes());
            h.update(&s.header.num_tokens.to_le_bytes());
            h.update(&s.header.dtype.code().to_le_bytes());
        }
        h.digest()
    }
}
