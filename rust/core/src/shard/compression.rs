//! Compressed shard bodies for storage and transfer: a shard's `.bin` may be
//! stored as one zstd frame (`<bin>.zst`). Readers never map a compressed
//! body: a cache decompresses it once, on arrival, into the plain `.bin`
//! that the manifest names and checksums, and maps that.

use std::fs::File;
use std::io::{BufWriter, Write};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How shard bodies are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// One zstd frame per shard body.
    Zstd,
}

/// zstd level used when writing: fast to write, a few times smaller than
/// the raw tokens (figures in `docs/remote.md`).
pub const ZSTD_LEVEL: i32 = 3;

impl Compression {
    /// `None` for `"none"` (or an empty string), the compression for `"zstd"`.
    pub fn parse(name: &str) -> Result<Option<Self>> {
        match name {
            "" | "none" => Ok(None),
            "zstd" => Ok(Some(Compression::Zstd)),
            other => Err(Error::invalid(
                "compression",
                format!("{other:?} is not supported; use \"zstd\" or \"none\""),
            )),
        }
    }

    /// Canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
        }
    }

    /// Suffix added to the `.bin` file name of a stored body.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::Zstd => ".zst",
        }
    }
}

/// File name under which the body of the shard whose token file is `bin` is
/// stored.
pub fn stored_name(bin: &str, compression: Option<Compression>) -> String {
    match compression {
        Some(c) => format!("{bin}{}", c.suffix()),
        None => bin.to_string(),
    }
}

/// Where a shard's token bytes go while it is written.
pub(crate) enum BodySink {
    /// Plain tokens.
    Plain(BufWriter<File>),
    /// A zstd frame of the tokens.
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<File>>),
}

impl BodySink {
    /// A sink writing `file` stored as `compression`.
    pub(crate) fn new(file: File, compression: Option<Compression>) -> std::io::Result<Self> {
        let buf = BufWriter::with_capacity(8 << 20, file);
        Ok(match compression {
            None => BodySink::Plain(buf),
            Some(Compression::Zstd) => {
                BodySink::Zstd(zstd::stream::write::Encoder::new(buf, ZSTD_LEVEL)?)
            }
        })
    }

    /// Ends the frame (if any), flushes and returns the file.
    pub(crate) fn finish(self) -> std::io::Result<File> {
        let buf = match self {
            BodySink::Plain(b) => b,
            BodySink::Zstd(enc) => enc.finish()?,
        };
        buf.into_inner().map_err(|e| e.into_error())
    }

    /// Drops what is buffered without writing it (the file is removed next).
    pub(crate) fn discard(self) {
        match self {
            BodySink::Plain(b) => {
                let _ = b.into_parts();
            }
            BodySink::Zstd(enc) => drop(enc),
        }
    }
}

impl Write for BodySink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            BodySink::Plain(w) => w.write(buf),
            BodySink::Zstd(w) => w.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            BodySink::Plain(w) => w.write_all(buf),
            BodySink::Zstd(w) => w.write_all(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            BodySink::Plain(w) => w.flush(),
            BodySink::Zstd(w) => w.flush(),
        }
    }
}
