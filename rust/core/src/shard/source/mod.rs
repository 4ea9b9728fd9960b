//! Provenance sidecars (`part-NNNNN.g<gen>.src`): for every document of a
//! shard, the input file and the row inside it that the document came from.
//!
//! Layout (little-endian): magic `TLOOMSRC`, version `u32` = 1, reserved
//! `u32`, `num_docs` `u64`, `json_len` `u64`, `json_len` bytes of UTF-8 JSON
//! (`[[path, first_doc], ...]`: runs of documents from one file, `first_doc`
//! local to the shard, the first 0, increasing), zero padding to a multiple of
//! 8 bytes, `num_docs` × `u64` rows, and the xxh3-64 of every byte before it.

use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use super::index::Layout;
use super::lock::TargetLock;
use super::manifest::Manifest;
use super::names::{sidecar_name, TMP_PREFIX};
use super::reader::Dataset;
use crate::error::{Error, Result};
use crate::io::{read_regular, u32_le, u64_le, write_atomic};
use crate::progress::Progress;

/// Magic bytes of a sidecar.
pub const MAGIC: &[u8; 8] = b"TLOOMSRC";
/// Sidecar version this build writes and reads.
pub const VERSION: u32 = 1;
const HEADER: usize = 32;
const FIX: &str = "the provenance sidecar is damaged; rebuild the dataset to recover provenance, or delete every .src file of the dataset to use it without provenance";

/// Where the documents of one shard came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sources {
    /// Runs of documents from one file: (path, first document of the run).
    pub runs: Vec<(String, u64)>,
    /// Row (line or record number, 0-based) of each document in its file.
    pub rows: Vec<u64>,
}

impl Sources {
    /// Checks that the runs cover the rows: first run at 0, increasing starts
    /// below the number of documents.
    fn check(&self) -> std::result::Result<(), String> {
        let n = self.rows.len() as u64;
        if n == 0 {
            return Ok(());
        }
        match self.runs.first() {
            Some((_, 0)) => {}
            _ => return Err("the first run must start at document 0".into()),
        }
        for w in self.runs.windows(2) {
            if w[1].1 <= w[0].1 {
                return Err(format!(
                    "run starts must increase, got {} after {}",
                    w[1].1, w[0].1
                ));
            }
        }
        if let Some((_, last)) = self.runs.last() {
            if *last >= n {
                return Err(format!("run start {last} is past the {n} documents"));
            }
        }
        Ok(())
    }

    /// The file and row of local document `j`.
    pub fn get(&self, j: u64) -> Option<(&str, u64)> {
        let row = *self.rows.get(j as usize)?;
        let r = self.runs.partition_point(|(_, start)| *start <= j);
        let (path, _) = self.runs.get(r.checked_sub(1)?)?;
        Some((path.as_str(), row))
    }

    /// The sidecar bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.check().map_err(|e| Error::invalid("sources", e))?;
        let json = serde_json::to_vec(&self.runs)
            .map_err(|e| Error::invalid("sources", format!("cannot serialise: {e}")))?;
        let pad = (8 - json.len() % 8) % 8;
        let mut out = Vec::with_capacity(HEADER + json.len() + pad + 8 * self.rows.len() + 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(self.rows.len() as u64).to_le_bytes());
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(&json);
        out.resize(out.len() + pad, 0);
        for r in &self.rows {
            out.extend_from_slice(&r.to_le_bytes());
        }
        let sum = xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        Ok(out)
    }

    /// Parses and checks sidecar bytes; `path` names the file in errors.
    pub fn decode(b: &[u8], path: &Path) -> Result<Self> {
        if b.len() < HEADER + 8 || &b[..8] != MAGIC {
            return Err(Error::corrupt(
                path,
                0,
                "not a provenance sidecar (bad magic or too short)",
                FIX,
            ));
        }
        let version = u32_le(b, 8);
        if version != VERSION {
            return Err(Error::version(path, 8, version.into(), VERSION.into()));
        }
        let body = b.len() - 8;
        let stored = u64_le(b, body);
        if xxh3_64(&b[..body]) != stored {
            return Err(Error::corrupt(path, body as u64, "checksum mismatch", FIX));
        }
        let n = u64_le(b, 16);
        let json_len = u64_le(b, 24);
        let rows_at = (HEADER as u64)
            .checked_add(json_len)
            .map(|x| x.div_ceil(8) * 8);
        let expected = rows_at.and_then(|r| n.checked_mul(8).and_then(|x| x.checked_add(r)));
        let (Some(rows_at), Some(expected)) = (rows_at, expected) else {
            return Err(Error::corrupt(path, 16, "sizes overflow", FIX));
        };
        if expected != body as u64 {
            return Err(Error::corrupt(
                path,
                16,
                format!("{n} documents and {json_len} bytes of names need {expected} bytes before the checksum, found {body}"),
                FIX,
            ));
        }
        let runs: Vec<(String, u64)> =
            serde_json::from_slice(&b[HEADER..HEADER + json_len as usize]).map_err(|e| {
                Error::corrupt(path, HEADER as u64, format!("file names: {e}"), FIX)
            })?;
        let rows = (0..n as usize)
            .map(|k| u64_le(b, rows_at as usize + 8 * k))
            .collect();
        let s = Sources { runs, rows };
        s.check()
            .map_err(|e| Error::corrupt(path, HEADER as u64, e, FIX))?;
        Ok(s)
    }

    /// Reads the sidecar at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let b = read_regular(path, u64::MAX)?;
        Self::decode(&b, path)
    }
}

/// Writes the sidecars of every shard of the committed dataset at `root`
/// from dataset-wide `runs` (path, first document) and `rows` (one per
/// document). Each sidecar is written atomically; the manifest is unchanged.
pub fn write_for_dataset(root: &Path, runs: &[(String, u64)], rows: &[u64]) -> Result<()> {
    let _lock = TargetLock::dataset(root, "provenance sidecars")?;
    let manifest = Manifest::load(root)?;
    if rows.len() as u64 != manifest.num_docs {
        return Err(Error::invalid(
            "rows",
            format!(
                "{} rows given for a dataset of {} documents",
                rows.len(),
                manifest.num_docs
            ),
        ));
    }
    let whole = Sources {
        runs: runs.to_vec(),
        rows: rows.to_vec(),
    };
    whole.check().map_err(|e| Error::invalid("sources", e))?;
    let mut first = 0u64;
    for shard in &manifest.shards {
        let end = first + shard.num_docs;
        let mut local = Vec::new();
        for (k, (path, start)) in runs.iter().enumerate() {
            let next = runs.get(k + 1).map_or(u64::MAX, |r| r.1);
            if next > first && *start < end {
                local.push((path.clone(), start.saturating_sub(first)));
            }
        }
        if let Some(r) = local.first_mut() {
            r.1 = 0;
        }
        let s = Sources {
            runs: local,
            rows: rows[first as usize..end as usize].to_vec(),
        };
        let name = sidecar_name(&shard.bin);
        write_atomic(
            &root.join(format!("{TMP_PREFIX}{name}")),
            &root.join(&name),
            &s.encode()?,
        )?;
        first = end;
    }
    Ok(())
}

/// Reads the sidecar of shard `s` of `ds`.
pub fn load_shard(ds: &Dataset, s: usize) -> Result<Sources> {
    let entry = ds
        .manifest()
        .shards
        .get(s)
        .ok_or_else(|| Error::invalid("shard", format!("{s} is out of range")))?;
    let path = ds.root().join(sidecar_name(&entry.bin));
    if !path.exists() {
        return Err(Error::invalid(
            "dataset",
            format!(
                "{} has no provenance sidecar ({}); only datasets made by build record sources",
                ds.root().display(),
                path.display()
            ),
        ));
    }
    let s = Sources::load(&path)?;
    if s.rows.len() as u64 != entry.num_docs {
        return Err(Error::corrupt(
            &path,
            16,
            format!(
                "{} documents listed, the shard has {}",
                s.rows.len(),
                entry.num_docs
            ),
            FIX,
        ));
    }
    Ok(s)
}

/// Checks the provenance sidecars of `ds` when it has any: each one's
/// header, checksum and runs, and one row per document of its shard. When
/// one shard has a sidecar, every shard must. Returns how many were checked
/// (0 for a dataset without provenance, or read from a foreign format).
pub fn verify_sidecars(ds: &Dataset, progress: &dyn Progress) -> Result<usize> {
    if ds.shards().iter().any(|s| s.layout() != Layout::Native) {
        return Ok(0);
    }
    let paths: Vec<PathBuf> = ds
        .manifest()
        .shards
        .iter()
        .map(|e| ds.root().join(sidecar_name(&e.bin)))
        .collect();
    let Some(present) = paths.iter().find(|p| p.exists()) else {
        return Ok(0);
    };
    for (s, path) in paths.iter().enumerate() {
        progress.check()?;
        if !path.exists() {
            return Err(Error::corrupt(
                path,
                0,
                format!(
                    "the provenance sidecar of shard {s} is missing ({} exists)",
                    present.display()
                ),
                FIX,
            ));
        }
        load_shard(ds, s)?;
    }
    Ok(paths.len())
}

#[cfg(test)]
mod tests;
