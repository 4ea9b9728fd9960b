//! One dataset's object store client: built from the URL, the store's usual
//! environment variables and the caller's options; every request runs on
//! this process's I/O runtime and fails with an error naming the object.

use std::future::Future;
use std::sync::{Arc, Mutex, Once};

use bytes::Bytes;
use object_store::path::Path as ObjPath;
use object_store::{
    aws::AmazonS3Builder, azure::MicrosoftAzureBuilder, gcp::GoogleCloudStorageBuilder,
    http::HttpBuilder, BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreExt, RetryConfig,
};
use tokenloom_core::{Error, Result};
use tokio::runtime::Runtime;
use url::Url;

use crate::location::Kind;
use crate::options::RemoteOptions;

/// This process's I/O runtime; a forked child (whose parent's threads did
/// not survive the fork) builds its own.
fn runtime() -> Result<&'static Runtime> {
    static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);
    let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if let Some((p, rt)) = *slot {
        if p == pid {
            return Ok(rt);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tokenloom-io")
        .enable_all()
        .build()
        .map_err(|e| Error::io("<tokio runtime>", e))?;
    // Kept for the life of the process (a parent's runtime is abandoned in a child).
    let rt: &'static Runtime = Box::leak(Box::new(rt));
    *slot = Some((pid, rt));
    Ok(rt)
}

/// Installs rustls' cryptography (ring) for HTTPS, once per process,
/// before the first client is built.
fn install_tls() {
    static TLS: Once = Once::new();
    TLS.call_once(|| {
        // An error means a provider is installed already (by another library).
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Runs `f` to completion on the I/O runtime (from any non-runtime thread).
pub(crate) fn block_on<F: Future>(f: F) -> Result<F::Output> {
    Ok(runtime()?.block_on(f))
}

/// The error chain of `e` in one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

/// A core error naming `object` for a failed request.
pub(crate) fn store_error(object: &str, e: &object_store::Error) -> Error {
    use std::io::ErrorKind;
    let kind = match e {
        object_store::Error::NotFound { .. } => ErrorKind::NotFound,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => ErrorKind::PermissionDenied,
        _ => ErrorKind::Other,
    };
    let mut msg = match kind {
        ErrorKind::NotFound => format!("no such object or bucket ({})", chain(e)),
        _ => chain(e),
    };
    // Without credentials, the S3 client falls back to the instance metadata
    // service (`/latest/api/token`, `/latest/meta-data/`): its failure means
    // that no credentials were found.
    let lower = msg.to_ascii_lowercase();
    if ["credential", "/latest/api/token", "/latest/meta-data/"]
        .iter()
        .any(|k| lower.contains(k))
    {
        msg.push_str(" — no usable credentials: set the store's usual variables (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, GOOGLE_SERVICE_ACCOUNT, AZURE_STORAGE_ACCOUNT_KEY...) or pass them in storage_options; for a public bucket set aws_skip_signature=true");
    }
    Error::io(object, std::io::Error::new(kind, msg))
}

/// A dataset's store: the client and the prefix of the dataset's objects.
#[derive(Debug)]
pub struct Store {
    url: Url,
    kind: Kind,
    prefix: ObjPath,
    opts: RemoteOptions,
    client: Mutex<Option<(u32, Arc<dyn ObjectStore>)>>,
}

fn retry(opts: &RemoteOptions) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: opts.max_retries,
        retry_timeout: opts.retry_timeout,
    }
}

fn bad_option(key: &str, url: &Url, e: impl std::fmt::Display) -> Error {
    Error::invalid(
        "storage_options",
        format!("{key:?} is not an option of the store of {url} ({e})"),
    )
}

impl Store {
    /// The store of the dataset at `url`; checks the configuration (a
    /// missing bucket, an unknown option) without any request.
    pub fn new(url: &Url, kind: Kind, opts: &RemoteOptions) -> Result<Self> {
        let prefix = ObjPath::parse(url.path().trim_matches('/')).map_err(|e| {
            Error::invalid(
                "url",
                format!("{url}: the path is not a valid object path ({e})"),
            )
        })?;
        let store = Store {
            url: url.clone(),
            kind,
            prefix,
            opts: opts.clone(),
            client: Mutex::new(None),
        };
        store.client()?;
        Ok(store)
    }

    fn build(&self) -> Result<Arc<dyn ObjectStore>> {
        install_tls();
        let url = &self.url;
        let what = |e: object_store::Error| {
            Error::invalid(
                "url",
                format!("{url}: cannot configure the store ({})", chain(&e)),
            )
        };
        let opts = &self.opts.storage;
        Ok(match self.kind {
            Kind::S3 => {
                let mut b = AmazonS3Builder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry(&self.opts));
                for (k, v) in opts {
                    b = b.with_config(k.parse().map_err(|e| bad_option(k, url, e))?, v);
                }
                Arc::new(b.build().map_err(what)?)
            }
            Kind::Gcs => {
                let mut b = GoogleCloudStorageBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry(&self.opts));
                for (k, v) in opts {
                    b = b.with_config(k.parse().map_err(|e| bad_option(k, url, e))?, v);
                }
                Arc::new(b.build().map_err(what)?)
            }
            Kind::Azure => {
                let mut b = MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry(&self.opts));
                for (k, v) in opts {
                    b = b.with_config(k.parse().map_err(|e| bad_option(k, url, e))?, v);
                }
                Arc::new(b.build().map_err(what)?)
            }
            Kind::File => {
                let dir = self.url.to_file_path().map_err(|()| {
                    Error::invalid("path", format!("{} is not a local directory", self.url))
                })?;
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(|e| {
                        Error::invalid("path", format!("{}: {}", dir.display(), chain(&e)))
                    })?,
                )
            }
            Kind::Http => {
                let base = &url[..url::Position::BeforePath];
                let mut b = HttpBuilder::new()
                    .with_url(base)
                    .with_retry(retry(&self.opts));
                for (k, v) in opts {
                    let key: ClientConfigKey = k.parse().map_err(|e| bad_option(k, url, e))?;
                    b = b.with_config(key, v);
                }
                Arc::new(b.build().map_err(what)?)
            }
        })
    }

    /// This process's client (rebuilt in a forked child: the parent's
    /// connections are not ours to use).
    fn client(&self) -> Result<Arc<dyn ObjectStore>> {
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        if let Some((p, c)) = slot.as_ref() {
            if *p == pid {
                return Ok(Arc::clone(c));
            }
        }
        let c = self.build()?;
        *slot = Some((pid, Arc::clone(&c)));
        Ok(c)
    }

    /// The store of a local dataset directory, read through the cache.
    pub fn local(dir: &std::path::Path, opts: &RemoteOptions) -> Result<Self> {
        let abs = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        let url = Url::from_directory_path(&abs).map_err(|()| {
            Error::invalid(
                "path",
                format!("{} is not an absolute directory", abs.display()),
            )
        })?;
        let store = Store {
            url,
            kind: Kind::File,
            prefix: ObjPath::default(),
            opts: opts.clone(),
            client: Mutex::new(None),
        };
        store.client()?;
        Ok(store)
    }

    /// The dataset's URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL of object `name` of the dataset (for messages).
    pub fn object_url(&self, name: &str) -> String {
        format!("{}/{name}", self.url.as_str().trim_end_matches('/'))
    }

    pub(crate) fn path(&self, name: &str) -> ObjPath {
        self.prefix.clone().join(name)
    }

    /// The whole object `name`, or `None` when it does not exist.
    pub fn get_opt(&self, name: &str) -> Result<Option<Bytes>> {
        let client = self.client()?;
        let path = self.path(name);
        let got = block_on(async move {
            match client.get(&path).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        got.map_err(|e| store_error(&self.object_url(name), &e))
    }

    /// The whole object `name`.
    pub fn get(&self, name: &str) -> Result<Bytes> {
        let client = self.client()?;
        let path = self.path(name);
        block_on(async move { client.get(&path).await?.bytes().await })?
            .map_err(|e| store_error(&self.object_url(name), &e))
    }

    /// The client and the path of `name`, for streaming transfers.
    pub(crate) fn handle(&self, name: &str) -> Result<(Arc<dyn ObjectStore>, ObjPath)> {
        Ok((self.client()?, self.path(name)))
    }

    /// Names (relative to the dataset prefix) of the objects directly under it.
    pub fn list(&self) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        let client = self.client()?;
        let prefix = self.prefix.clone();
        let metas: Vec<object_store::ObjectMeta> =
            block_on(async move { client.list(Some(&prefix)).try_collect().await })?
                .map_err(|e| store_error(self.url.as_str(), &e))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let parts: Vec<_> = m.location.prefix_match(&self.prefix)?.collect();
                match parts.as_slice() {
                    [one] => Some(one.as_ref().to_string()),
                    _ => None,
                }
            })
            .collect())
    }

    /// Deletes object `name` (best effort is up to the caller).
    pub fn delete(&self, name: &str) -> Result<()> {
        let client = self.client()?;
        let path = self.path(name);
        block_on(async move { client.delete(&path).await })?
            .map_err(|e| store_error(&self.object_url(name), &e))
    }
}
