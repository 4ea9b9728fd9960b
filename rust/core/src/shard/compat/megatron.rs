//! Megatron-LM / megatron-core indexed datasets, read in place: `PREFIX.bin`
//! (tokens, no header) and `PREFIX.idx`:
//!
//! ```text
//! 0      9   magic            b"MMIDIDX\x00\x00"
//! 9      8   version          u64 = 1
//! 17     1   dtype code       u8 (8 = uint16, 4 = int32, 3 = int16 are read)
//! 18     8   sequence count   u64 N
//! 26     8   document count   u64 M (document table length, starts with 0)
//! 34     4N  sequence_lengths  i32, tokens
//! 34+4N  8N  sequence_pointers i64, byte offsets into the .bin
//! 34+12N 8M  document_indices  i64, 0 .. N
//! (+N bytes of sequence modes in multimodal indexes)
//! ```
//!
//! As in Megatron's GPTDataset, each sequence is one document. The arrays
//! are not aligned; every value is read with an unaligned little-endian load.

use std::path::Path;

use super::super::dtype::DType;
use super::super::index::{IndexHeader, Layout};
use crate::error::{Error, Result};
use crate::io::u64_le;

/// Magic bytes opening a Megatron `.idx`.
pub const MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";
/// The only Megatron index version.
pub const VERSION: u64 = 1;
/// Bytes before `sequence_lengths`.
pub const HEADER_LEN: usize = 34;

const FIX: &str = "the Megatron index is damaged or does not belong to this .bin; rebuild the pair with Megatron's tools/preprocess_data.py, or restore it from a good copy";

/// Megatron dtype code for tokens stored as `dtype` (u32 tokens are written
/// as int32, code 4: Megatron has no unsigned 32-bit code).
pub fn code_for(dtype: DType) -> u8 {
    match dtype {
        DType::U16 => 8,
        DType::U32 => 4,
    }
}

/// The token type tokenloom reads for a Megatron dtype code. Signed codes
/// are read as the unsigned type of the same width: token ids are never
/// negative, and for ids below 2^15 / 2^31 the bytes are identical.
pub fn dtype_for(code: u8, path: &Path) -> Result<DType> {
    let name = match code {
        8 => return Ok(DType::U16),
        3 => return Ok(DType::U16),
        4 => return Ok(DType::U32),
        1 => "uint8",
        2 => "int8",
        5 => "int64",
        6 => "float64",
        7 => "float32",
        _ => {
            return Err(Error::corrupt(
                path,
                17,
                format!("unknown Megatron dtype code {code} (megatron-core knows 1 to 8)"),
                FIX,
            ))
        }
    };
    Err(Error::corrupt(
        path,
        17,
        format!(
            "Megatron dtype code {code} ({name}) is not a token type tokenloom reads (uint16 = 8, int16 = 3, int32 = 4)"
        ),
        "re-export the data with Megatron's tools/preprocess_data.py, which writes uint16 for vocabularies under 65,500 and int32 otherwise",
    ))
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    u64_le(b, at) as i64
}

/// Checks a Megatron `.idx` against its `.bin` (of `bin_len` bytes): magic,
/// version, dtype code, exact size for its counts, the document table's
/// first and last entries, the first pointer, and that the last sequence
/// ends exactly at the end of the `.bin`. O(1); each document read checks
/// its own pointer and length.
pub fn parse(
    bytes: &[u8],
    idx_path: &Path,
    bin_path: &Path,
    bin_len: u64,
) -> Result<(IndexHeader, Layout)> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::corrupt(
            idx_path,
            bytes.len() as u64,
            format!(
                "Megatron index is {} bytes, shorter than its {HEADER_LEN}-byte header; the file is truncated",
                bytes.len()
            ),
            FIX,
        ));
    }
    if &bytes[..9] != MAGIC {
        return Err(Error::corrupt(
            idx_path,
            0,
            format!(
                "bad magic {:?} (expected Megatron's \"MMIDIDX\\0\\0\" or tokenloom's \"TLOOMIDX\")",
                String::from_utf8_lossy(&bytes[..9])
            ),
            "this is not an index tokenloom reads; index a raw token file with `tokenloom index`",
        ));
    }
    let version = u64_le(bytes, 9);
    if version != VERSION {
        return Err(Error::version(idx_path, 9, version, VERSION));
    }
    let dtype = dtype_for(bytes[17], idx_path)?;
    let itemsize = dtype.itemsize() as u64;
    let n = u64_le(bytes, 18);
    let m = u64_le(bytes, 26);
    let expected = n
        .checked_mul(12)
        .and_then(|a| m.checked_mul(8).and_then(|b| a.checked_add(b)))
        .and_then(|a| a.checked_add(HEADER_LEN as u64));
    let len = bytes.len() as u64;
    // Multimodal indexes append one mode byte per sequence.
    let fits = expected.is_some_and(|e| len == e || e.checked_add(n) == Some(len));
    if !fits {
        return Err(Error::corrupt(
            idx_path,
            18,
            format!(
                "header says {n} sequences and {m} document entries, which need {} bytes, but the file has {len} bytes{}",
                expected.map_or_else(|| "more than 2^64".to_string(), |e| e.to_string()),
                if expected.is_some_and(|e| len < e) { "; the file is truncated" } else { "" }
            ),
            FIX,
        ));
    }
    let (n_us, m_us) = (n as usize, m as usize);
    let lengths_at = HEADER_LEN;
    let pointers_at = lengths_at + 4 * n_us;
    let docs_at = pointers_at + 8 * n_us;
    if m == 0 {
        return Err(Error::corrupt(
            idx_path,
            26,
            "document table is empty (it always starts with 0)",
            FIX,
        ));
    }
    let first_doc = i64_at(bytes, docs_at);
    if first_doc != 0 {
        return Err(Error::corrupt(
            idx_path,
            docs_at as u64,
            format!("document table starts with {first_doc} (must be 0)"),
            FIX,
        ));
    }
    let last_at = docs_at + 8 * (m_us - 1);
    let last_doc = i64_at(bytes, last_at);
    if last_doc as u64 != n || last_doc < 0 {
        return Err(Error::corrupt(
            idx_path,
            last_at as u64,
            format!("document table ends with {last_doc} but there are {n} sequences"),
            FIX,
        ));
    }
    if bin_len % itemsize != 0 {
        return Err(Error::corrupt(
            bin_path,
            bin_len - bin_len % itemsize,
            format!(
                "token file has {bin_len} bytes, not a whole number of {itemsize}-byte tokens; the file is truncated"
            ),
            FIX,
        ));
    }
    // Where the data ends according to the index.
    let end = if n == 0 {
        0
    } else {
        let first = i64_at(bytes, pointers_at);
        if first != 0 {
            return Err(Error::corrupt(
                idx_path,
                pointers_at as u64,
                format!("first sequence starts at byte {first} of the .bin (must be 0)"),
                FIX,
            ));
        }
        let k = n_us - 1;
        let ptr = i64_at(bytes, pointers_at + 8 * k);
        let seq = u32_at_i32(bytes, lengths_at + 4 * k);
        let end = u64::try_from(ptr)
            .ok()
            .zip(u64::try_from(seq).ok())
            .and_then(|(p, l)| l.checked_mul(itemsize).and_then(|b| b.checked_add(p)));
        match end {
            Some(e) if p_aligned(ptr, itemsize) => e,
            _ => {
                return Err(Error::corrupt(
                    idx_path,
                    (pointers_at + 8 * k) as u64,
                    format!("last sequence has pointer {ptr} and length {seq}, which is not a valid byte range"),
                    FIX,
                ))
            }
        }
    };
    if end != bin_len {
        return Err(Error::corrupt(
            bin_path,
            end.min(bin_len),
            format!(
                "token file has {bin_len} bytes but its index ({}) says the last sequence ends at byte {end}{}",
                idx_path.display(),
                if end > bin_len { "; the file is truncated" } else { "" }
            ),
            FIX,
        ));
    }
    let header = IndexHeader {
        dtype,
        num_docs: n,
        num_tokens: bin_len / itemsize,
        bin_offset: 0,
        bin_xxh3: 0,
    };
    let layout = Layout::Megatron {
        lengths_at,
        pointers_at,
        itemsize: itemsize as u8,
    };
    Ok((header, layout))
}

fn p_aligned(ptr: i64, itemsize: u64) -> bool {
    ptr >= 0 && ptr as u64 % itemsize == 0
}

fn u32_at_i32(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_le_bytes(a) as i64
}

/// Serialises a Megatron `.idx` for documents of `lengths` tokens of
/// `dtype`, contiguous in the `.bin`, one sequence per document.
pub fn encode(dtype: DType, lengths: &[u64], path: &Path) -> Result<Vec<u8>> {
    let n = lengths.len();
    let mut out = Vec::with_capacity(HEADER_LEN + 12 * n + 8 * (n + 1));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(code_for(dtype));
    out.extend_from_slice(&(n as u64).to_le_bytes());
    out.extend_from_slice(&(n as u64 + 1).to_le_bytes());
    for (j, &len) in lengths.iter().enumerate() {
        let l = i32::try_from(len).map_err(|_| {
            Error::invalid(
                "documents",
                format!(
                    "document {j} has {len} tokens; a Megatron index stores lengths as int32 (at most {}) for {}",
                    i32::MAX,
                    path.display()
                ),
            )
        })?;
        out.extend_from_slice(&l.to_le_bytes());
    }
    let mut ptr = 0u64;
    for &len in lengths {
        out.extend_from_slice(&ptr.to_le_bytes());
        ptr += len * dtype.itemsize() as u64;
    }
    for k in 0..=n as u64 {
        out.extend_from_slice(&k.to_le_bytes());
    }
    Ok(out)
}

/// Suffix of the note tokenloom writes beside a Megatron pair it converts a
/// dataset to (`PREFIX.tokenloom.json`): the EOS id, vocabulary size and
/// tokenizer, for which the Megatron format has no room, so that a
/// conversion back keeps them. Megatron's tools ignore the file.
pub const META_SUFFIX: &str = ".tokenloom.json";
const META_FORMAT: &str = "tokenloom.megatron-metadata";

/// What the note beside a Megatron pair records.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// Always `"tokenloom.megatron-metadata"`.
    pub format: String,
    /// Sequences in the pair it describes.
    pub num_docs: u64,
    /// Tokens in the pair it describes.
    pub num_tokens: u64,
    /// End-of-document token id.
    pub eos_id: Option<u64>,
    /// Vocabulary size.
    pub vocab_size: Option<u64>,
    /// Tokenizer fingerprint.
    pub tokenizer: Option<String>,
}

/// The note's path for the pair whose token file is `bin` (`PREFIX.bin`).
pub fn meta_path(bin: &Path) -> std::path::PathBuf {
    let mut s = bin.with_extension("").into_os_string();
    s.push(META_SUFFIX);
    s.into()
}

impl Meta {
    /// A note for a pair of `num_docs` sequences and `num_tokens` tokens.
    pub fn new(num_docs: u64, num_tokens: u64) -> Self {
        Meta {
            format: META_FORMAT.into(),
            num_docs,
            num_tokens,
            ..Meta::default()
        }
    }

    /// Whether there is anything to record.
    pub fn is_empty(&self) -> bool {
        self.eos_id.is_none() && self.vocab_size.is_none() && self.tokenizer.is_none()
    }

    /// The note beside the pair `bin` of `num_docs` sequences and
    /// `num_tokens` tokens of `dtype`, when there is one that describes this
    /// very pair (a note left from another version of the pair, with other
    /// counts, is not used). A damaged note is an error naming it.
    pub fn read(bin: &Path, num_docs: u64, num_tokens: u64, dtype: DType) -> Result<Option<Self>> {
        let path = meta_path(bin);
        if !path.exists() {
            return Ok(None);
        }
        let text = crate::io::read_regular(&path, 1 << 20)?;
        let fix = "the note is damaged; delete it (the Megatron pair reads without it) or convert the dataset again";
        let meta: Meta = serde_json::from_slice(&text)
            .map_err(|e| Error::corrupt(&path, 0, format!("not a tokenloom note ({e})"), fix))?;
        if meta.format != META_FORMAT {
            return Err(Error::corrupt(
                &path,
                0,
                "not a tokenloom note (format)",
                fix,
            ));
        }
        if (meta.num_docs, meta.num_tokens) != (num_docs, num_tokens) {
            return Ok(None);
        }
        let limit = dtype.max_token() + 1;
        let vocab_ok = meta.vocab_size.is_none_or(|v| v > 0 && v <= limit);
        let eos_ok = meta
            .eos_id
            .is_none_or(|e| e < meta.vocab_size.unwrap_or(limit));
        if !vocab_ok || !eos_ok {
            return Err(Error::corrupt(
                &path,
                0,
                format!(
                    "eos_id {:?} and vocab_size {:?} do not fit {dtype} tokens",
                    meta.eos_id, meta.vocab_size
                ),
                fix,
            ));
        }
        Ok(Some(meta))
    }
}
