//! Generations of a dataset directory: shard file names carry the generation
//! that wrote them, so a new dataset is written beside the old one and the
//! manifest, renamed last, decides which generation is live.

use std::fs;
use std::path::Path;

use super::compression::stored_name;
use super::manifest::{Manifest, FILE_NAME};
use super::source::sidecar_name;
use crate::error::{Error, IoContext, Result};

/// Prefix of files being written, renamed into place once complete.
pub(crate) const TMP_PREFIX: &str = ".tmp.";

/// File name of shard `number` of `generation` with extension `ext`.
pub(crate) fn shard_name(number: usize, generation: u64, ext: &str) -> String {
    format!("part-{number:05}.g{generation}.{ext}")
}

/// Generation encoded in a shard or sidecar file name, if it is one of ours.
pub(crate) fn generation_of(name: &str) -> Option<u64> {
    let name = name.strip_prefix(TMP_PREFIX).unwrap_or(name);
    let rest = name.strip_prefix("part-")?;
    let (_, rest) = rest.split_once(".g")?;
    let (g, ext) = rest.split_once('.')?;
    if !matches!(ext, "bin" | "idx" | "src" | "bin.zst") {
        return None;
    }
    g.parse().ok()
}

/// Makes `root` ready for a new generation: refuses an existing dataset
/// unless `overwrite`, creates the directory when missing. Returns the
/// largest generation in use there and whether the directory was created.
pub(crate) fn prepare_root(root: &Path, overwrite: bool) -> Result<(u64, bool)> {
    if root.is_file() {
        return Err(Error::AlreadyExists {
            path: root.to_path_buf(),
        });
    }
    let mut generation = 0u64;
    if root.is_dir() {
        if root.join(FILE_NAME).exists() && !overwrite {
            return Err(Error::AlreadyExists {
                path: root.to_path_buf(),
            });
        }
        if let Ok(old) = Manifest::load(root) {
            generation = old.generation;
        }
        for entry in fs::read_dir(root).at(root)? {
            let name = entry.at(root)?.file_name();
            if let Some(g) = name.to_str().and_then(generation_of) {
                generation = generation.max(g);
            }
        }
        Ok((generation, false))
    } else {
        fs::create_dir_all(root).at(root)?;
        Ok((0, true))
    }
}

/// Removes shard and sidecar files in `root` that `manifest` does not list
/// (a replaced generation, leftovers of crashed writes). Best effort.
pub(crate) fn remove_unlisted(root: &Path, manifest: &Manifest) {
    let keep: std::collections::HashSet<String> = manifest
        .shards
        .iter()
        .flat_map(|s| {
            [
                stored_name(&s.bin, manifest.compression),
                s.idx.clone(),
                sidecar_name(&s.bin),
            ]
        })
        .collect();
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = generation_of(name).is_some() || name == format!("{TMP_PREFIX}{FILE_NAME}");
        if ours && !keep.contains(name) {
            let _ = fs::remove_file(entry.path());
        }
    }
}
