//! Where a dataset lives: a local path, or a URL of an object store
//! (`s3://`, `gs://`, `az://`, `http(s)://`); `file://` URLs are local paths.

use std::path::PathBuf;

use tokenloom_core::{Error, Result};
use url::Url;

/// The object stores tokenloom reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Amazon S3 and S3-compatible stores (`s3://bucket/prefix`).
    S3,
    /// Google Cloud Storage (`gs://bucket/prefix`).
    Gcs,
    /// Azure Blob Storage (`az://container/prefix`, `abfs[s]://...`).
    Azure,
    /// A plain HTTP(S) server (read-only unless it speaks WebDAV).
    Http,
    /// A local directory read through the cache (a compressed dataset).
    File,
}

/// A parsed dataset location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A path on local disk.
    Local(PathBuf),
    /// A dataset in an object store.
    Remote {
        /// The URL, without a trailing slash.
        url: Url,
        /// Which store.
        kind: Kind,
    },
}

const SCHEMES: &str = "s3://, gs://, az://, http(s):// or file:// (or a local path)";

/// Whether `text` is a URL (has a `scheme://`) rather than a local path.
pub fn is_url(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        scheme.len() > 1
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.')
    })
}

impl Location {
    /// Parses a dataset path or URL.
    pub fn parse(text: &str) -> Result<Self> {
        if !is_url(text) {
            return Ok(Location::Local(PathBuf::from(text)));
        }
        let mut url = Url::parse(text)
            .map_err(|e| Error::invalid("url", format!("{text} is not a valid URL ({e})")))?;
        let scheme = url.scheme().to_ascii_lowercase();
        let kind = match scheme.as_str() {
            "file" => {
                return url.to_file_path().map(Location::Local).map_err(|_| {
                    Error::invalid(
                        "url",
                        format!("{text} is not an absolute file:// path on this machine"),
                    )
                })
            }
            "s3" | "s3a" => Kind::S3,
            "gs" | "gcs" => Kind::Gcs,
            "az" | "azure" | "abfs" | "abfss" | "adl" => Kind::Azure,
            "http" | "https" => Kind::Http,
            other => {
                return Err(Error::invalid(
                    "url",
                    format!("{text}: the scheme {other}:// is not supported; use {SCHEMES}"),
                ))
            }
        };
        if url.host_str().is_none_or(str::is_empty) {
            let what = if kind == Kind::Http {
                "host"
            } else {
                "bucket or container"
            };
            return Err(Error::invalid(
                "url",
                format!("{text} names no {what}; write it as {scheme}://{what}/path/to/dataset"),
            ));
        }
        let path = url.path().trim_end_matches('/').to_string();
        url.set_path(&path);
        url.set_query(None);
        url.set_fragment(None);
        Ok(Location::Remote { url, kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls() {
        assert_eq!(
            Location::parse("data/web").unwrap(),
            Location::Local("data/web".into())
        );
        assert_eq!(
            Location::parse("file:///tmp/ds").unwrap(),
            Location::Local("/tmp/ds".into())
        );
        match Location::parse("s3://bucket/a/b/").unwrap() {
            Location::Remote { url, kind } => {
                assert_eq!(kind, Kind::S3);
                assert_eq!(url.as_str(), "s3://bucket/a/b");
            }
            other => panic!("{other:?}"),
        }
        let err = Location::parse("ftp://host/ds").unwrap_err().to_string();
        assert!(err.contains("ftp://") && err.contains("s3://"), "{err}");
        let err = Location::parse("s3:///ds").unwrap_err().to_string();
        assert!(err.contains("names no bucket"), "{err}");
    }
}
