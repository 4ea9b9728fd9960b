//! Downloads with checks: every body and index is compared with what the
//! manifest records (size and xxh3 of the decompressed bytes) before it is
//! renamed into the cache. Transient failures (a dropped connection, a body
//! cut short) are retried with backoff; an object that differs from the
//! manifest on every attempt is reported as changed, naming it.

use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use tokenloom_core::error::IoContext;
use tokenloom_core::hash::hex;
use tokenloom_core::io::open_regular;
use tokenloom_core::shard::Compression;
use tokenloom_core::{Error, Result};
use xxhash_rust::xxh3::Xxh3;

use crate::cache::Reservation;
use crate::options::{RemoteOptions, FETCH_ATTEMPTS, RANGE_CONCURRENCY};
use crate::store::{block_on, store_error, Store};

/// What a fetched body must be once decompressed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Expect {
    pub len: u64,
    pub xxh3: u64,
}

enum Failure {
    /// Worth another attempt (network trouble, a short transfer).
    Transient(Error),
    /// The bytes arrived but differ from the manifest.
    Mismatch(String),
    /// Retrying cannot help (missing object, no permission, local disk full).
    Fatal(Error),
}

const CHANGED_FIX: &str = "the object changed after the manifest was written; rewrite the dataset (its manifest is uploaded last) or restore the object";

fn from_store(object: &str, e: &object_store::Error) -> Failure {
    match e {
        object_store::Error::NotFound { .. }
        | object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => Failure::Fatal(store_error(object, e)),
        _ => Failure::Transient(store_error(object, e)),
    }
}

/// Counts and hashes what passes through to the file.
struct Hashing<W> {
    inner: W,
    hasher: Xxh3,
    len: u64,
    limit: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.len + buf.len() as u64 > self.limit {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "more bytes than the manifest records",
            ));
        }
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Whether the file at `path` (a regular file, never a link or a device)
/// is what `expect` describes.
pub(crate) fn check_file(path: &Path, expect: Expect) -> Result<std::result::Result<(), String>> {
    let len = open_regular(path)?.metadata().at(path)?.len();
    if len != expect.len {
        return Ok(Err(format!(
            "{len} bytes, the manifest records {}",
            expect.len
        )));
    }
    let (_, sum) = tokenloom_core::hash::file_xxh3(path)?;
    if sum != expect.xxh3 {
        return Ok(Err(format!(
            "checksum {}, the manifest records {}",
            hex(sum),
            hex(expect.xxh3)
        )));
    }
    Ok(Ok(()))
}

fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(100u64 << attempt.min(6)));
}

/// Downloads body `stored` into the room taken for it (decompressing it)
/// and checks it against `expect`. Every attempt writes from offset 0 of
/// the reserved file, which keeps its full size throughout.
pub(crate) fn fetch_body(
    store: &Store,
    stored: &str,
    room: &Reservation,
    compression: Option<Compression>,
    expect: Expect,
    opts: &RemoteOptions,
) -> Result<()> {
    let object = store.object_url(stored);
    let mut last = String::new();
    for attempt in 0..FETCH_ATTEMPTS {
        let ranged = compression.is_none() && opts.range_bytes > 0 && expect.len > opts.range_bytes;
        let out = if ranged {
            fetch_ranges(store, stored, room, expect, opts.range_bytes)
        } else {
            fetch_stream(store, stored, room, compression, expect)
        };
        let out = out.and_then(|()| match check_file(room.path(), expect) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(Failure::Mismatch(why)),
            Err(e) => Err(Failure::Fatal(e)),
        });
        match out {
            Ok(()) => return Ok(()),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Transient(e)) => last = e.to_string(),
            Err(Failure::Mismatch(why)) => last = why,
        }
        if attempt + 1 < FETCH_ATTEMPTS {
            backoff(attempt);
        }
    }
    Err(Error::corrupt(
        &object,
        0,
        format!(
            "after {FETCH_ATTEMPTS} attempts the object still does not match the manifest ({last})"
        ),
        CHANGED_FIX,
    ))
}

fn fetch_stream(
    store: &Store,
    stored: &str,
    room: &Reservation,
    compression: Option<Compression>,
    expect: Expect,
) -> std::result::Result<(), Failure> {
    let object = store.object_url(stored);
    let tmp = room.path();
    let (client, path) = store.handle(stored).map_err(Failure::Fatal)?;
    let mut file = room.file().try_clone().at(tmp).map_err(Failure::Fatal)?;
    file.seek(SeekFrom::Start(0))
        .at(tmp)
        .map_err(Failure::Fatal)?;
    let sink = Hashing {
        inner: BufWriter::with_capacity(4 << 20, file),
        hasher: Xxh3::new(),
        len: 0,
        limit: expect.len,
    };
    enum Out<W: Write> {
        Plain(W),
        Zstd(zstd::stream::write::Decoder<'static, W>),
    }
    let mut out = match compression {
        None => Out::Plain(sink),
        Some(Compression::Zstd) => Out::Zstd(
            zstd::stream::write::Decoder::new(sink)
                .at(tmp)
                .map_err(Failure::Fatal)?,
        ),
    };
    let local = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::InvalidData {
            Failure::Mismatch(e.to_string())
        } else {
            Failure::Fatal(Error::io(tmp, e))
        }
    };
    block_on(async {
        let got = client
            .get(&path)
            .await
            .map_err(|e| from_store(&object, &e))?;
        if compression.is_none() && got.meta.size != expect.len {
            return Err(Failure::Fatal(Error::corrupt(
                &object,
                0,
                format!(
                    "the object holds {} bytes but the manifest records {}",
                    got.meta.size, expect.len
                ),
                CHANGED_FIX,
            )));
        }
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk: Bytes = chunk.map_err(|e| from_store(&object, &e))?;
            match &mut out {
                Out::Plain(w) => w.write_all(&chunk).map_err(local)?,
                Out::Zstd(w) => w.write_all(&chunk).map_err(local)?,
            }
        }
        Ok(())
    })
    .map_err(Failure::Fatal)??;
    let sink = match out {
        Out::Plain(w) => w,
        Out::Zstd(mut w) => {
            w.flush().map_err(local)?;
            w.into_inner()
        }
    };
    let file = sink.inner.into_inner().map_err(|e| local(e.into_error()))?;
    file.sync_all().map_err(local)?;
    if sink.len < expect.len {
        return Err(Failure::Transient(Error::io(
            &object,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the transfer ended after {} of {} bytes",
                    sink.len, expect.len
                ),
            ),
        )));
    }
    Ok(())
}

fn fetch_ranges(
    store: &Store,
    stored: &str,
    room: &Reservation,
    expect: Expect,
    range_bytes: u64,
) -> std::result::Result<(), Failure> {
    use std::os::unix::fs::FileExt;
    let object = store.object_url(stored);
    let (tmp, file) = (room.path(), room.file());
    let (client, path) = store.handle(stored).map_err(Failure::Fatal)?;
    let ranges: Vec<std::ops::Range<u64>> = (0..expect.len)
        .step_by(range_bytes as usize)
        .map(|a| a..(a + range_bytes).min(expect.len))
        .collect();
    block_on(async {
        let meta = client
            .head(&path)
            .await
            .map_err(|e| from_store(&object, &e))?;
        if meta.size != expect.len {
            return Err(Failure::Fatal(Error::corrupt(
                &object,
                0,
                format!(
                    "the object holds {} bytes but the manifest records {}",
                    meta.size, expect.len
                ),
                CHANGED_FIX,
            )));
        }
        let client: &dyn ObjectStore = &*client;
        let path = &path;
        let mut parts = futures::stream::iter(ranges)
            .map(|r| async move {
                let start = r.start;
                client.get_range(path, r).await.map(|b| (start, b))
            })
            .buffer_unordered(RANGE_CONCURRENCY);
        while let Some(part) = parts.next().await {
            let (start, bytes) = part.map_err(|e| from_store(&object, &e))?;
            file.write_all_at(&bytes, start)
                .map_err(|e| Failure::Fatal(Error::io(tmp, e)))?;
        }
        Ok(())
    })
    .map_err(Failure::Fatal)??;
    file.sync_all().at(tmp).map_err(Failure::Fatal)?;
    Ok(())
}

/// Object `name`, checked by `check` (which says what is wrong), with the
/// same retries as bodies.
pub(crate) fn get_checked<T>(
    store: &Store,
    name: &str,
    check: impl Fn(&Bytes) -> Result<T>,
) -> Result<T> {
    let mut last = None;
    for attempt in 0..FETCH_ATTEMPTS {
        let bytes = match store.get(name) {
            Ok(b) => b,
            Err(e) => {
                let transient = matches!(&e, Error::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::Other);
                if !transient {
                    return Err(e);
                }
                last = Some(e);
                backoff(attempt);
                continue;
            }
        };
        match check(&bytes) {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
        if attempt + 1 < FETCH_ATTEMPTS {
            backoff(attempt);
        }
    }
    Err(last.unwrap_or_else(|| Error::invalid("fetch", "no attempt was made")))
}
