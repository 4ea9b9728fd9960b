//! `tokenloom index`: build a tokenloom `.idx` for a raw token file
//! (headerless nanoGPT style, or llm.c / modded-nanogpt with a 1024-byte
//! header) by scanning it for the end-of-document token.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use super::dtype::DType;
use super::index::{self, IndexHeader};
use crate::error::{Error, IoContext, Result};
use crate::io::{create_new, fsync_dir, MappedFile};
use crate::progress::Progress;

/// Where the EOS token sits relative to the document it delimits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Boundary {
    /// EOS ends a document and belongs to it (nanoGPT appends EOT).
    After,
    /// EOS starts a document and belongs to it (llm.c prepends EOT as BOS).
    Before,
}

/// Which header the raw file has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawHeader {
    /// Detect an llm.c header by its magic and size, else none.
    Auto,
    /// Headerless tokens.
    None,
    /// The llm.c 1024-byte header (256 little-endian i32).
    LlmC,
}

/// Options of [`index_raw`].
#[derive(Clone, Debug)]
pub struct RawIndexOptions {
    /// Token dtype; required for headerless files, checked against an llm.c header.
    pub dtype: Option<DType>,
    /// The end-of-document token id.
    pub eos: u64,
    /// EOS position; default: `Before` for llm.c files, `After` otherwise.
    pub boundary: Option<Boundary>,
    /// Header detection.
    pub header: RawHeader,
    /// Where to write the index; default: the token file with extension `.idx`.
    pub out: Option<PathBuf>,
    /// Replace an existing index file.
    pub overwrite: bool,
}

/// What [`index_raw`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawIndexReport {
    /// The index written.
    pub idx_path: PathBuf,
    /// Token dtype.
    pub dtype: DType,
    /// Header found: `"none"` or `"llm.c"`.
    pub header: &'static str,
    /// Boundary rule used.
    pub boundary: Boundary,
    /// Documents found.
    pub num_docs: u64,
    /// Tokens in the file.
    pub num_tokens: u64,
}

const LLMC_HEADER: usize = 1024;
/// llm.c magics and the dtype each implies: GPT-2 (u16), Llama-3 (u32), eval (u16).
const LLMC_MAGICS: [(i32, DType); 3] = [
    (20240520, DType::U16),
    (20240801, DType::U32),
    (20240522, DType::U16),
];

fn i32_at(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_le_bytes(a)
}

/// Recognises an llm.c header: magic, and a token count that matches the size.
fn llmc_header(bytes: &[u8]) -> Option<(DType, u64)> {
    if bytes.len() < LLMC_HEADER {
        return None;
    }
    let magic = i32_at(bytes, 0);
    let dtype = LLMC_MAGICS.iter().find(|(m, _)| *m == magic)?.1;
    let ntok = u64::try_from(i32_at(bytes, 8)).ok()?;
    (ntok * dtype.itemsize() as u64 + LLMC_HEADER as u64 == bytes.len() as u64)
        .then_some((dtype, ntok))
}

/// Calls `out` with the position (plus `base`) of every `eos` in `tokens`, in order.
fn find_eos<T: Copy + PartialEq>(
    tokens: &[T],
    eos: T,
    base: u64,
    out: &mut impl FnMut(u64) -> Result<()>,
) -> Result<()> {
    let mut chunks = tokens.chunks_exact(64);
    let mut at = base;
    for chunk in &mut chunks {
        // Most chunks hold no EOS: a vectorised any-test skips them.
        if chunk.iter().fold(false, |hit, &t| hit | (t == eos)) {
            let mut mask = 0u64;
            for (k, &t) in chunk.iter().enumerate() {
                mask |= ((t == eos) as u64) << k;
            }
            while mask != 0 {
                out(at + mask.trailing_zeros() as u64)?;
                mask &= mask - 1;
            }
        }
        at += 64;
    }
    for (k, &t) in chunks.remainder().iter().enumerate() {
        if t == eos {
            out(at + k as u64)?;
        }
    }
    Ok(())
}

/// The index being written: offsets streamed to a temporary file as they
/// are found, so that memory stays O(1) in the number of documents; the
/// header (known at the end) and the trailer are written last.
struct IndexOut {
    tmp: PathBuf,
    file: BufWriter<File>,
    docs: u64,
    last: u64,
}

impl IndexOut {
    fn create(tmp: PathBuf) -> Result<Self> {
        let mut file = BufWriter::with_capacity(1 << 20, create_new(&tmp)?);
        file.write_all(&[0u8; index::HEADER_LEN]).at(&tmp)?;
        file.write_all(&0u64.to_le_bytes()).at(&tmp)?;
        Ok(IndexOut {
            tmp,
            file,
            docs: 0,
            last: 0,
        })
    }

    /// Records a document boundary (strictly after the previous one).
    fn cut(&mut self, at: u64) -> Result<()> {
        if at > self.last {
            self.file.write_all(&at.to_le_bytes()).at(&self.tmp)?;
            self.docs += 1;
            self.last = at;
        }
        Ok(())
    }

    /// Writes the header, then the checksum of everything before it;
    /// returns the number of documents.
    fn finish(self, mut header: IndexHeader) -> Result<u64> {
        header.num_docs = self.docs;
        let tmp = self.tmp;
        let mut file = self
            .file
            .into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?;
        let head = index::encode_header(&header);
        file.seek(SeekFrom::Start(0)).at(&tmp)?;
        file.write_all(&head).at(&tmp)?;
        file.seek(SeekFrom::Start(0)).at(&tmp)?;
        let mut hasher = Xxh3::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).at(&tmp)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        file.seek(SeekFrom::End(0)).at(&tmp)?;
        file.write_all(&hasher.digest().to_le_bytes()).at(&tmp)?;
        file.sync_all().at(&tmp)?;
        Ok(header.num_docs)
    }
}

/// Whether `a` and `b` name the same file (the same inode), when both exist.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    a == b
}

/// Scans `bin` and writes its `.idx`. Memory is O(1): document offsets go
/// to the index file as they are found. Cancellation is honoured until the
/// index is renamed into place; nothing is left behind then.
pub fn index_raw(
    bin: &Path,
    opts: &RawIndexOptions,
    progress: &dyn Progress,
) -> Result<RawIndexReport> {
    let map = MappedFile::open(bin)?;
    let bytes = map.bytes();
    let detected = match opts.header {
        RawHeader::None => None,
        RawHeader::Auto => llmc_header(bytes),
        RawHeader::LlmC => Some(llmc_header(bytes).ok_or_else(|| {
            Error::corrupt(
                bin,
                0,
                "no valid llm.c header (magic 20240520/20240801/20240522 and a token count matching the file size)",
                "drop --header llmc for a headerless file, or re-export the file",
            )
        })?),
    };
    let (dtype, bin_offset) = match (detected, opts.dtype) {
        (Some((d, _)), Some(want)) if d != want => {
            return Err(Error::invalid(
                "dtype",
                format!(
                    "{} has an llm.c header for {d} tokens but {want} was asked for; drop --dtype",
                    bin.display()
                ),
            ))
        }
        (Some((d, _)), _) => (d, LLMC_HEADER),
        (None, Some(d)) => (d, 0),
        (None, None) => {
            return Err(Error::invalid(
                "dtype",
                format!(
                    "{} has no llm.c header; pass --dtype u16 or u32",
                    bin.display()
                ),
            ))
        }
    };
    if opts.eos > dtype.max_token() {
        return Err(Error::invalid(
            "eos",
            format!("{} does not fit {dtype}", opts.eos),
        ));
    }
    let data = &bytes[bin_offset..];
    let size = dtype.itemsize();
    if data.len() % size != 0 {
        return Err(Error::corrupt(
            bin,
            (bin_offset + data.len() / size * size) as u64,
            format!(
                "{} bytes of tokens is not a whole number of {dtype} tokens",
                data.len()
            ),
            "check --dtype, or the file is truncated",
        ));
    }
    let boundary = opts.boundary.unwrap_or(if detected.is_some() {
        Boundary::Before
    } else {
        Boundary::After
    });
    let idx_path = opts
        .out
        .clone()
        .unwrap_or_else(|| bin.with_extension("idx"));
    if idx_path == bin || same_file(&idx_path, bin) {
        return Err(Error::invalid(
            "out",
            format!(
                "{} is the token file itself; the index goes beside it (default: {})",
                idx_path.display(),
                default_index_path(bin).display()
            ),
        ));
    }
    if idx_path.exists() && !opts.overwrite {
        return Err(Error::AlreadyExists { path: idx_path });
    }
    let num_tokens = (data.len() / size) as u64;
    let tmp = idx_path.with_extension(format!("idx.tmp.{}", std::process::id()));
    let result = scan_into(
        &map, data, dtype, opts.eos, boundary, num_tokens, &tmp, progress,
    )
    .and_then(|(offsets, bin_xxh3)| {
        let num_docs = offsets.finish(IndexHeader {
            dtype,
            num_docs: 0,
            num_tokens,
            bin_offset: bin_offset as u64,
            bin_xxh3,
        })?;
        // The last moment a Ctrl-C can still stop the index from appearing.
        progress.check()?;
        std::fs::rename(&tmp, &idx_path).at(&idx_path)?;
        let dir = idx_path.parent().filter(|p| !p.as_os_str().is_empty());
        fsync_dir(dir.unwrap_or(Path::new(".")))?;
        Ok(num_docs)
    });
    let num_docs = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    Ok(RawIndexReport {
        idx_path,
        dtype,
        header: if detected.is_some() { "llm.c" } else { "none" },
        boundary,
        num_docs,
        num_tokens,
    })
}

/// Scans the token bytes `data` for `eos` in blocks (for progress and
/// cancellation), hashing them as it goes; writes the boundaries to `tmp`.
#[allow(clippy::too_many_arguments)]
fn scan_into(
    map: &MappedFile,
    data: &[u8],
    dtype: DType,
    eos: u64,
    boundary: Boundary,
    num_tokens: u64,
    tmp: &Path,
    progress: &dyn Progress,
) -> Result<(IndexOut, u64)> {
    // Each block is hashed and scanned in cache-sized pieces so the file is
    // read from memory once.
    const BLOCK: usize = 8 << 20;
    const PIECE: usize = 256 << 10;
    let bin = map.path();
    let size = dtype.itemsize();
    let mut out = IndexOut::create(tmp.to_path_buf())?;
    let mut hasher = Xxh3::new();
    progress.start("index", data.len() as u64);
    let mut cut = |p: u64| {
        let at = match boundary {
            Boundary::After => p + 1,
            Boundary::Before => p,
        };
        if at < num_tokens {
            out.cut(at)?;
        }
        Ok(())
    };
    for (b, block) in data.chunks(BLOCK).enumerate() {
        progress.check()?;
        map.check_unchanged()?;
        for (p, piece) in block.chunks(PIECE).enumerate() {
            hasher.update(piece);
            let base = ((b * BLOCK + p * PIECE) / size) as u64;
            match dtype {
                DType::U16 => {
                    let t: &[u16] = bytemuck::try_cast_slice(piece).map_err(|_| misaligned(bin))?;
                    find_eos(t, eos as u16, base, &mut cut)?;
                }
                DType::U32 => {
                    let t: &[u32] = bytemuck::try_cast_slice(piece).map_err(|_| misaligned(bin))?;
                    find_eos(t, eos as u32, base, &mut cut)?;
                }
            }
        }
        progress.advance(block.len() as u64);
    }
    progress.finish();
    if num_tokens > 0 {
        out.cut(num_tokens)?;
    }
    Ok((out, hasher.digest()))
}

fn misaligned(bin: &Path) -> Error {
    Error::corrupt(
        bin,
        0,
        "token data is not aligned to the token size",
        "report this: maps are page aligned",
    )
}

/// The index path a raw token file would get from [`index_raw`] by default.
pub fn default_index_path(bin: &Path) -> PathBuf {
    bin.with_extension("idx")
}

/// Whether `path` starts with the tokenloom index magic.
pub fn is_tokenloom_index(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut f = crate::io::open_regular(path)?;
    let mut magic = [0u8; 8];
    Ok(f.read_exact(&mut magic).is_ok() && &magic == index::MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::shard::reader::Dataset;
    use proptest::prelude::*;

    fn write(path: &Path, header: Option<(i32, i32, u64)>, tokens: &[u16]) {
        let mut b = Vec::new();
        if let Some((magic, version, n)) = header {
            let mut h = [0i32; 256];
            h[0] = magic;
            h[1] = version;
            h[2] = n as i32;
            b.extend(h.iter().flat_map(|v| v.to_le_bytes()));
        }
        b.extend(tokens.iter().flat_map(|v| v.to_le_bytes()));
        std::fs::write(path, b).unwrap();
    }

    fn opts(dtype: Option<DType>) -> RawIndexOptions {
        RawIndexOptions {
            dtype,
            eos: 0,
            boundary: None,
            header: RawHeader::Auto,
            out: None,
            overwrite: false,
        }
    }

    #[test]
    fn headerless_eos_after() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("train.bin");
        write(&bin, None, &[5, 6, 0, 7, 0, 8]);
        let r = index_raw(&bin, &opts(Some(DType::U16)), &NoProgress).unwrap();
        assert_eq!((r.num_docs, r.num_tokens, r.header), (3, 6, "none"));
        let ds = Dataset::open(&bin).unwrap();
        assert_eq!(ds.doc(0).unwrap().to_vec(), vec![5, 6, 0]);
        assert_eq!(ds.doc(2).unwrap().to_vec(), vec![8]);
        assert!(matches!(
            index_raw(&bin, &opts(Some(DType::U16)), &NoProgress),
            Err(Error::AlreadyExists { .. })
        ));
    }

    #[test]
    fn llmc_header_detected_with_bos_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("fineweb_val_000000.bin");
        let toks = [0u16, 5, 6, 0, 7];
        write(&bin, Some((20240520, 1, toks.len() as u64)), &toks);
        let r = index_raw(&bin, &opts(None), &NoProgress).unwrap();
        assert_eq!(
            (r.num_docs, r.header, r.boundary),
            (2, "llm.c", Boundary::Before)
        );
        let ds = Dataset::open(&bin).unwrap();
        assert_eq!(ds.doc(1).unwrap().to_vec(), vec![0, 7]);
    }

    #[test]
    fn wrong_dtype_and_odd_size_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("x.bin");
        std::fs::write(&bin, [1u8, 2, 3]).unwrap();
        assert!(matches!(
            index_raw(&bin, &opts(Some(DType::U16)), &NoProgress),
            Err(Error::Corrupt { offset: 2, .. })
        ));
        assert!(matches!(
            index_raw(&bin, &opts(None), &NoProgress),
            Err(Error::InvalidArgument { .. })
        ));
    }

    /// Cancels at the first check after the scan has finished.
    struct CancelAfterScan(std::sync::atomic::AtomicBool);

    impl Progress for CancelAfterScan {
        fn start(&self, _: &str, _: u64) {}
        fn advance(&self, _: u64) {}
        fn finish(&self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        fn cancelled(&self) -> bool {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[test]
    fn ctrl_c_after_the_scan_leaves_no_index() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("t.bin");
        write(&bin, None, &[5, 0, 6, 0]);
        let p = CancelAfterScan(std::sync::atomic::AtomicBool::new(false));
        let e = index_raw(&bin, &opts(Some(DType::U16)), &p).unwrap_err();
        assert!(matches!(e, Error::Cancelled), "{e}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "only the token file is left: {left:?}");
    }

    #[test]
    fn the_index_never_replaces_its_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("tok.idx");
        write(&bin, None, &[5, 0, 6, 0]);
        let before = std::fs::read(&bin).unwrap();
        for out in [
            None,
            Some(bin.clone()),
            Some(dir.path().join(".").join("tok.idx")),
        ] {
            let o = RawIndexOptions {
                out,
                overwrite: true,
                ..opts(Some(DType::U16))
            };
            let e = index_raw(&bin, &o, &NoProgress).unwrap_err().to_string();
            assert!(e.contains("is the token file itself"), "{e}");
        }
        assert_eq!(std::fs::read(&bin).unwrap(), before);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn scan_matches_naive_split(tokens in proptest::collection::vec(0u16..4, 0..300), before in any::<bool>()) {
            let dir = tempfile::tempdir().unwrap();
            let bin = dir.path().join("t.bin");
            write(&bin, None, &tokens);
            let boundary = if before { Boundary::Before } else { Boundary::After };
            let o = RawIndexOptions { boundary: Some(boundary), ..opts(Some(DType::U16)) };
            index_raw(&bin, &o, &NoProgress).unwrap();
            let ds = Dataset::open(&bin).unwrap();
            // Naive reference: cut before/after each EOS (0).
            let mut docs: Vec<Vec<u32>> = vec![];
            let mut cur = vec![];
            for &t in &tokens {
                if t == 0 && before && !cur.is_empty() { docs.push(std::mem::take(&mut cur)); }
                cur.push(t as u32);
                if t == 0 && !before { docs.push(std::mem::take(&mut cur)); }
            }
            if !cur.is_empty() { docs.push(cur); }
            prop_assert_eq!(ds.num_docs(), docs.len() as u64);
            for (i, d) in docs.iter().enumerate() {
                prop_assert_eq!(&ds.doc(i as u64).unwrap().to_vec(), d);
            }
        }
    }
}
