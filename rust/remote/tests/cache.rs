//! The shard cache over a local compressed dataset (the same path a remote
//! one takes, with the file system as the store): documents equal the
//! written ones, the cache stays under its limit, damaged cached bodies are
//! fetched again, and a full local disk leaves no body behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use tokenloom_core::shard::{Acquired, Compression};
use tokenloom_core::{DatasetWriter, WriterOptions};
use tokenloom_remote::RemoteOptions;

fn docs() -> Vec<Vec<u32>> {
    (0..60u32)
        .map(|i| {
            (0..(5 + (i * 37) % 90))
                .map(|j| 1 + (i * 131 + j) % 999)
                .collect()
        })
        .collect()
}

fn write(dir: &Path) {
    let opts = WriterOptions {
        shard_bytes: 1000,
        ..WriterOptions::default()
    };
    let mut w = DatasetWriter::create(dir, opts).unwrap();
    w.set_compression(Some(Compression::Zstd)).unwrap();
    for d in docs() {
        w.add(&d).unwrap();
    }
    w.close().unwrap();
}

fn options(cache: &Path, limit: u64) -> RemoteOptions {
    let mut o = RemoteOptions::from_env().unwrap();
    o.cache_dir = cache.to_path_buf();
    o.cache_limit = limit;
    o
}

fn bodies(cache: &Path) -> u64 {
    walk(cache)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn documents_through_a_small_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("z");
    write(&data);
    let cache = tmp.path().join("cache");
    let limit = 6000;
    let ds = tokenloom_remote::open(data.to_str().unwrap(), &options(&cache, limit)).unwrap();
    let provider = ds.provider().unwrap().clone();
    assert!(ds.shards().len() > 4);
    for (i, d) in docs().iter().enumerate() {
        let (s, _) = ds.locate(i as u64).unwrap();
        let held = Acquired::new(provider.clone(), vec![s]).unwrap();
        assert_eq!(&held.view().doc(i as u64).unwrap().to_vec(), d);
        assert!(
            ds.doc(i as u64).is_err(),
            "the index-only dataset reads no tokens"
        );
        drop(held);
        assert!(
            bodies(&cache) <= limit,
            "{} bytes of bodies",
            bodies(&cache)
        );
    }
}

#[test]
fn damaged_cached_body_is_fetched_again() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("z");
    write(&data);
    let cache = tmp.path().join("cache");
    let opts = options(&cache, 1 << 30);
    let ds = tokenloom_remote::open(data.to_str().unwrap(), &opts).unwrap();
    let held = Acquired::new(ds.provider().unwrap().clone(), vec![0]).unwrap();
    let body = held.view().shards()[0].bin_path.clone();
    drop(held);
    drop(ds);
    let mut bytes = std::fs::read(&body).unwrap();
    bytes[1] ^= 0x55;
    std::fs::write(&body, &bytes).unwrap();
    let ds = tokenloom_remote::open(data.to_str().unwrap(), &opts).unwrap();
    let held = Acquired::new(ds.provider().unwrap().clone(), vec![0]).unwrap();
    assert_eq!(held.view().doc(0).unwrap().to_vec(), docs()[0]);
}
