//! Generations of a dataset directory: shard file names carry the generation
//! that wrote them, so a new dataset is written beside the old one and the
//! manifest, renamed last, decides which generation is live.

use std::fs;
use std::path::Path;

use super::compression::stored_name;
use super::lock::TargetLock;
use super::manifest::{Manifest, FILE_NAME};
use super::names::{generation_of, sidecar_name, TMP_PREFIX};
use crate::error::{Error, IoContext, Result};

/// A dataset directory made ready for a new generation by [`prepare_root`].
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The generation to write: one past every generation in use there.
    pub generation: u64,
    /// Whether the directory was created for this write.
    pub created_dir: bool,
    /// The directory's lock, held until the write is committed or aborted.
    pub lock: TargetLock,
}

/// Makes `root` ready for a new generation written by `what`: creates the
/// directory when missing, takes its lock (failing when another writer
/// holds it), then refuses an existing dataset unless `overwrite`.
pub(crate) fn prepare_root(root: &Path, overwrite: bool, what: &str) -> Result<Prepared> {
    let (created_dir, lock) = lock_root(root, what)?;
    let generation = next_generation(&lock, overwrite).inspect_err(|_| {
        if created_dir {
            let _ = fs::remove_dir(root);
        }
    })?;
    Ok(Prepared {
        generation,
        created_dir,
        lock,
    })
}

/// Creates the dataset directory `root` when missing and locks it for
/// `what`; returns whether it was created, and the lock.
pub(crate) fn lock_root(root: &Path, what: &str) -> Result<(bool, TargetLock)> {
    if root.exists() && !root.is_dir() {
        return Err(Error::AlreadyExists {
            path: root.to_path_buf(),
        });
    }
    let created_dir = !root.is_dir();
    if created_dir {
        fs::create_dir_all(root).at(root)?;
    }
    Ok((created_dir, TargetLock::dataset(root, what)?))
}

/// The generation a new write of the locked directory gets; refuses an
/// existing dataset unless `overwrite`. Checked under the lock, so that a
/// dataset committed by a writer that held it just before is seen.
pub(crate) fn next_generation(lock: &TargetLock, overwrite: bool) -> Result<u64> {
    let root = lock.target();
    if root.join(FILE_NAME).exists() && !overwrite {
        return Err(Error::AlreadyExists {
            path: root.to_path_buf(),
        });
    }
    let mut generation = 0u64;
    if let Ok(old) = Manifest::load(root) {
        generation = old.generation;
    }
    for entry in fs::read_dir(root).at(root)? {
        let name = entry.at(root)?.file_name();
        if let Some(g) = name.to_str().and_then(generation_of) {
            generation = generation.max(g);
        }
    }
    generation.checked_add(1).ok_or_else(|| {
        Error::invalid(
            "generation",
            format!(
                "{}: generation {generation} is the largest there is, so no newer one can be written there; write the dataset to a new directory, or delete the leftover files whose names carry .g{generation}.",
                root.display()
            ),
        )
    })
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
