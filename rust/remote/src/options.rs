//! How remote datasets are reached and cached. Every default is defined
//! here; the CLI, the bindings and Python read them.

use std::path::PathBuf;
use std::time::Duration;

use tokenloom_core::{Error, Result};

/// Cache size limit when none is given: 64 GiB.
pub const DEFAULT_CACHE_LIMIT: u64 = 64 << 30;
/// Batches a loader thread announces ahead of the one it reads.
pub const DEFAULT_LOOKAHEAD: usize = 8;
/// Shards downloaded at once in the background.
pub const DEFAULT_FETCH_THREADS: usize = 4;
/// Shard bodies larger than this are fetched as parallel range requests of
/// this size (plain bodies; a compressed body is one stream).
pub const DEFAULT_RANGE_BYTES: u64 = 32 << 20;
/// Range requests in flight per body.
pub const RANGE_CONCURRENCY: usize = 8;
/// Whole-object attempts when a transfer ends early or does not match the
/// manifest (each request inside is itself retried by the object store client).
pub const FETCH_ATTEMPTS: u32 = 4;
/// Retries of one request on throttling, server errors and dropped connections.
pub const DEFAULT_MAX_RETRIES: usize = 10;
/// Time after which a request is no longer retried.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(180);

/// Environment variable naming the cache directory.
pub const ENV_CACHE_DIR: &str = "TOKENLOOM_CACHE_DIR";
/// Environment variable with the cache size limit (bytes, or with a K/M/G/T suffix).
pub const ENV_CACHE_LIMIT: &str = "TOKENLOOM_CACHE_LIMIT";
/// Environment variable with the request retry count.
pub const ENV_MAX_RETRIES: &str = "TOKENLOOM_MAX_RETRIES";
/// Environment variable with the request retry timeout in seconds.
pub const ENV_RETRY_TIMEOUT: &str = "TOKENLOOM_RETRY_TIMEOUT";

/// Settings of the remote layer.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteOptions {
    /// Root of the local shard cache (shared by every dataset and process).
    pub cache_dir: PathBuf,
    /// Bytes the cache may hold on disk.
    pub cache_limit: u64,
    /// Batches announced ahead (see [`DEFAULT_LOOKAHEAD`]).
    pub lookahead: usize,
    /// Background downloads at once.
    pub fetch_threads: usize,
    /// Range request size for large plain bodies; 0 fetches each body in one request.
    pub range_bytes: u64,
    /// Request retries on transient errors.
    pub max_retries: usize,
    /// Retry deadline of one request.
    pub retry_timeout: Duration,
    /// Options of the object store (credentials, endpoint, region...), by
    /// the store's own key names (e.g. `aws_endpoint`, `aws_region`,
    /// `google_service_account`, `azure_storage_account_name`); they add to
    /// and override the store's usual environment variables.
    pub storage: Vec<(String, String)>,
}

/// `~/.cache/tokenloom/remote` (or under `XDG_CACHE_HOME`).
fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("tokenloom").join("remote")
}

/// Parses a byte count: digits with an optional K, M, G or T suffix (powers of 1024).
pub fn parse_bytes(text: &str) -> Result<u64> {
    let t = text.trim();
    let (digits, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        Some('T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| {
            Error::invalid(
                "cache_limit",
                format!("{text:?} is not a byte count (e.g. 50000000000, 800M, 64G)"),
            )
        })
}

impl RemoteOptions {
    /// The defaults, overridden by `TOKENLOOM_CACHE_DIR`, `TOKENLOOM_CACHE_LIMIT`,
    /// `TOKENLOOM_MAX_RETRIES` and `TOKENLOOM_RETRY_TIMEOUT` when set.
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let cache_limit = var(ENV_CACHE_LIMIT)
            .map(|v| parse_bytes(&v))
            .transpose()?
            .unwrap_or(DEFAULT_CACHE_LIMIT);
        let max_retries = match var(ENV_MAX_RETRIES) {
            Some(v) => v.trim().parse().map_err(|_| {
                Error::invalid(ENV_MAX_RETRIES, format!("{v:?} is not a whole number"))
            })?,
            None => DEFAULT_MAX_RETRIES,
        };
        let retry_timeout = match var(ENV_RETRY_TIMEOUT) {
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    Error::invalid(
                        ENV_RETRY_TIMEOUT,
                        format!("{v:?} is not a number of seconds"),
                    )
                })?,
            None => DEFAULT_RETRY_TIMEOUT,
        };
        Ok(RemoteOptions {
            cache_dir: var(ENV_CACHE_DIR).map_or_else(default_cache_dir, PathBuf::from),
            cache_limit,
            lookahead: DEFAULT_LOOKAHEAD,
            fetch_threads: DEFAULT_FETCH_THREADS,
            range_bytes: DEFAULT_RANGE_BYTES,
            max_retries,
            retry_timeout,
            storage: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("123").unwrap(), 123);
        assert_eq!(parse_bytes("800M").unwrap(), 800 << 20);
        assert_eq!(parse_bytes(" 2g ").unwrap(), 2 << 30);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }
}
