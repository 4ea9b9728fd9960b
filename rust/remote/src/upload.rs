//! Writing remote: a dataset is written to a local staging directory, then
//! uploaded object by object with its manifest last, the commit point. A
//! reader sees the previous manifest (and the objects it names) until the
//! new one lands, never a partial dataset. Shard objects take the next
//! generation's names, so the objects of the dataset being replaced are not
//! overwritten before the commit; they are deleted after it.

use std::io::Read;
use std::path::{Path, PathBuf};

use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use tokenloom_core::error::IoContext;
use tokenloom_core::shard::compression::stored_name;
use tokenloom_core::shard::manifest::FILE_NAME;
use tokenloom_core::shard::sidecar_name;
use tokenloom_core::shard::{DatasetWriter, Manifest, WriterOptions};
use tokenloom_core::{Error, Progress, Result};

use crate::location::{Kind, Location};
use crate::options::RemoteOptions;
use crate::store::{block_on, store_error, Store};

/// Objects up to this size are uploaded in one request; larger ones in parts of it.
const PART_BYTES: usize = 16 << 20;
/// Parts in flight per object.
const PART_CONCURRENCY: usize = 8;

fn remote_of(url: &str) -> Result<(url::Url, Kind)> {
    match Location::parse(url)? {
        Location::Remote { url, kind } => Ok((url, kind)),
        Location::Local(p) => Err(Error::invalid(
            "url",
            format!("{} is a local path, not an object store URL", p.display()),
        )),
    }
}

fn upload_file(store: &Store, local: &Path, name: &str, progress: &dyn Progress) -> Result<()> {
    let object = store.object_url(name);
    let (client, path) = store.handle(name)?;
    let mut file = std::fs::File::open(local).at(local)?;
    let len = file.metadata().at(local)?.len();
    if len as usize <= PART_BYTES {
        let mut buf = Vec::with_capacity(len as usize);
        file.read_to_end(&mut buf).at(local)?;
        block_on(async { client.put(&path, PutPayload::from(buf)).await })?
            .map_err(|e| store_error(&object, &e))?;
        progress.advance(len);
        return Ok(());
    }
    block_on(async {
        let upload = client.put_multipart(&path).await?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut buf = vec![0u8; PART_BYTES];
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| object_store::Error::Generic {
                    store: "local",
                    source: Box::new(e),
                })?;
            if n == 0 {
                break;
            }
            w.wait_for_capacity(PART_CONCURRENCY).await?;
            w.write(&buf[..n]);
            progress.advance(n as u64);
        }
        w.finish().await.map(|_| ())
    })?
    .map_err(|e| store_error(&object, &e))
}

/// Uploads the committed dataset at `local` to `url`; returns the manifest
/// as uploaded. Fails when a dataset is there already, unless `overwrite`.
pub fn upload_dataset(
    local: &Path,
    url: &str,
    opts: &RemoteOptions,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<Manifest> {
    let (url, kind) = remote_of(url)?;
    let store = Store::new(&url, kind, opts)?;
    let manifest_object = store.object_url(FILE_NAME);
    let old = store
        .get_opt(FILE_NAME)?
        .map(|b| Manifest::from_bytes(&b, Path::new(&manifest_object)))
        .transpose();
    let old = match old {
        Ok(m) => m,
        Err(_) if overwrite => None, // a damaged manifest is replaced too
        Err(e) => return Err(e),
    };
    if old.is_some() && !overwrite {
        return Err(Error::AlreadyExists {
            path: PathBuf::from(url.as_str()),
        });
    }
    let staged = Manifest::load(local)?;
    let generation = old.as_ref().map_or(staged.generation, |o| {
        o.generation.max(staged.generation) + 1
    });
    let mut out = staged.clone();
    out.generation = generation;
    let mut files = Vec::new();
    for (i, e) in out.shards.iter_mut().enumerate() {
        let src = &staged.shards[i];
        let (bin, idx) = (
            format!("part-{i:05}.g{generation}.bin"),
            format!("part-{i:05}.g{generation}.idx"),
        );
        files.push((
            local.join(stored_name(&src.bin, staged.compression)),
            stored_name(&bin, staged.compression),
        ));
        files.push((local.join(&src.idx), idx.clone()));
        let sidecar = local.join(sidecar_name(&src.bin));
        if sidecar.exists() {
            files.push((sidecar, sidecar_name(&bin)));
        }
        e.bin = bin;
        e.idx = idx;
    }
    let total: u64 = files
        .iter()
        .map(|(p, _)| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    progress.start("upload", total);
    for (path, name) in &files {
        progress.check()?;
        upload_file(&store, path, name, progress)?;
    }
    // The commit: readers see the new dataset from here on.
    let bytes = out.to_bytes()?;
    let (client, path) = store.handle(FILE_NAME)?;
    block_on(async { client.put(&path, PutPayload::from(bytes)).await })?
        .map_err(|e| store_error(&manifest_object, &e))?;
    progress.finish();
    // The replaced generation's objects: best effort.
    let keep: std::collections::HashSet<&str> = files.iter().map(|(_, n)| n.as_str()).collect();
    if let Ok(names) = store.list() {
        for name in names {
            if name.starts_with("part-") && !keep.contains(name.as_str()) {
                let _ = store.delete(&name);
            }
        }
    }
    Ok(out)
}

/// Where a dataset bound for `url` is staged before its upload.
pub fn staging_dir(url: &str, opts: &RemoteOptions) -> PathBuf {
    let key = xxhash_rust::xxh3::xxh3_64(url.as_bytes());
    opts.cache_dir
        .join(".staging")
        .join(format!("{key:016x}-{}", std::process::id()))
}

/// A [`DatasetWriter`] whose dataset goes to an object store when closed.
pub struct RemoteWriter {
    url: String,
    opts: RemoteOptions,
    overwrite: bool,
    staging: PathBuf,
    inner: DatasetWriter,
}

impl RemoteWriter {
    /// Starts writing the dataset bound for `url`; fails at once when a
    /// dataset is there and `writer.overwrite` is not set.
    pub fn create(url: &str, writer: WriterOptions, opts: &RemoteOptions) -> Result<Self> {
        let (parsed, kind) = remote_of(url)?;
        let store = Store::new(&parsed, kind, opts)?;
        if !writer.overwrite && store.get_opt(FILE_NAME)?.is_some() {
            return Err(Error::AlreadyExists {
                path: PathBuf::from(parsed.as_str()),
            });
        }
        let staging = staging_dir(parsed.as_str(), opts);
        let _ = std::fs::remove_dir_all(&staging);
        let overwrite = writer.overwrite;
        let inner = DatasetWriter::create(
            &staging,
            WriterOptions {
                overwrite: true,
                ..writer
            },
        )?;
        Ok(RemoteWriter {
            url: parsed.as_str().to_string(),
            opts: opts.clone(),
            overwrite,
            staging,
            inner,
        })
    }

    /// The local writer (documents are added through it).
    pub fn writer(&mut self) -> &mut DatasetWriter {
        &mut self.inner
    }

    /// The local writer, to read its counts.
    pub fn writer_ref(&self) -> &DatasetWriter {
        &self.inner
    }

    /// The destination URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Commits locally, uploads (manifest last) and removes the staging copy.
    pub fn close(&mut self, progress: &dyn Progress) -> Result<Manifest> {
        let done = self.inner.close().and_then(|_| {
            upload_dataset(
                &self.staging,
                &self.url,
                &self.opts,
                self.overwrite,
                progress,
            )
        });
        let _ = std::fs::remove_dir_all(&self.staging);
        done
    }

    /// Drops everything written; the remote dataset is untouched.
    pub fn abort(&mut self) {
        self.inner.abort();
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

impl Drop for RemoteWriter {
    fn drop(&mut self) {
        self.inner.abort();
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}
