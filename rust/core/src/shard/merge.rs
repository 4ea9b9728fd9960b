//! Combining committed datasets ("parts") into one dataset without copying
//! tokens: every part's shard files (and provenance sidecars) are hard-linked
//! into the destination under the new generation's names, then one manifest
//! listing them all is written atomically. The parts are left intact, so an
//! interrupted merge is simply run again.

use std::fs;
use std::path::{Path, PathBuf};

use super::generation::{lock_root, next_generation, remove_unlisted};
use super::lock::TargetLock;
use super::manifest::{Manifest, ShardEntry, FILE_NAME};
use super::names::{shard_name, sidecar_name, TMP_PREFIX};
use super::reader::Dataset;
use crate::error::{Error, IoContext, Result};
use crate::io::{create_new, fsync_dir, open_regular, write_atomic};

/// Refuses datasets that disagree on the tokenizer fingerprint (when both
/// record one), dtype, EOS or vocabulary size: their token ids do not mean
/// the same thing. `what` names the operation in the message.
pub fn check_compatible(datasets: &[(&Path, &Manifest)], what: &str) -> Result<()> {
    let Some((first_path, first)) = datasets.first() else {
        return Ok(());
    };
    let known = datasets.iter().find(|(_, m)| m.tokenizer.is_some());
    for (path, m) in datasets {
        if let (Some((kp, km)), Some(t)) = (known, &m.tokenizer) {
            if km.tokenizer.as_ref() != Some(t) {
                return Err(Error::invalid(
                    "datasets",
                    format!(
                        "cannot {what}: {} was tokenized with tokenizer {} but {} with {t}; rebuild one of them with the same tokenizer",
                        kp.display(),
                        km.tokenizer.as_deref().unwrap_or("?"),
                        path.display()
                    ),
                ));
            }
        }
        if what == "merge"
            && (m.dtype != first.dtype
                || m.eos_id != first.eos_id
                || m.vocab_size != first.vocab_size)
        {
            return Err(Error::invalid(
                "datasets",
                format!(
                    "cannot {what}: {} has dtype {}, eos_id {:?}, vocab_size {:?} but {} has {}, {:?}, {:?}",
                    first_path.display(),
                    first.dtype,
                    first.eos_id,
                    first.vocab_size,
                    path.display(),
                    m.dtype,
                    m.eos_id,
                    m.vocab_size
                ),
            ));
        }
    }
    Ok(())
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        fs::remove_file(to).at(to)?;
    }
    if fs::hard_link(from, to).is_err() {
        let tmp = to.with_file_name(format!(
            ".tmp.{}",
            to.file_name().and_then(|n| n.to_str()).unwrap_or("copy")
        ));
        let mut out = create_new(&tmp)?;
        std::io::copy(&mut open_regular(from)?, &mut out).at(&tmp)?;
        out.sync_all().at(&tmp)?;
        drop(out);
        fs::rename(&tmp, to).at(to)?;
    }
    Ok(())
}

/// Combines the committed datasets `parts`, in order, into one dataset at
/// `out` (which must not hold a dataset unless `overwrite`). Documents keep
/// their order: all of part 0, then part 1, and so on. The parts must agree
/// on dtype, EOS, vocabulary size and tokenizer. Cost: O(shards). `out`
/// is locked for the merge: another writer there makes it fail at once.
pub fn merge(out: &Path, parts: &[PathBuf], overwrite: bool) -> Result<Manifest> {
    let (created_dir, lock) = lock_root(out, "merge")?;
    let result = merge_locked(&lock, parts, overwrite);
    drop(lock);
    if result.is_err() && created_dir {
        let _ = fs::remove_dir(out); // only when nothing is in it
    }
    result
}

/// [`merge`] into the directory `lock` holds (a build locks its output for
/// its whole run, and merges its parts last).
pub fn merge_locked(lock: &TargetLock, parts: &[PathBuf], overwrite: bool) -> Result<Manifest> {
    let out = lock.target();
    let opened = parts
        .iter()
        .map(Dataset::open)
        .collect::<Result<Vec<_>>>()?;
    let pairs: Vec<(&Path, &Manifest)> = parts
        .iter()
        .zip(&opened)
        .map(|(p, d)| (p.as_path(), d.manifest()))
        .collect();
    check_compatible(&pairs, "merge")?;
    if parts
        .iter()
        .any(|p| p.join(FILE_NAME) == out.join(FILE_NAME))
    {
        return Err(Error::invalid("parts", "a part cannot be the destination"));
    }
    let generation = next_generation(lock, overwrite)?;
    let mut manifest = match opened.first() {
        Some(d) => {
            let mut m = Manifest::new(d.dtype());
            m.eos_id = d.manifest().eos_id;
            m.vocab_size = d.manifest().vocab_size;
            m.tokenizer = d.manifest().tokenizer.clone();
            m
        }
        None => {
            return Err(Error::invalid("parts", "at least one part is needed"));
        }
    };
    manifest.tokenizer = pairs.iter().find_map(|(_, m)| m.tokenizer.clone());
    manifest.generation = generation;
    for (part, ds) in parts.iter().zip(&opened) {
        for e in &ds.manifest().shards {
            let n = manifest.shards.len();
            let bin = shard_name(n, generation, "bin");
            let idx = shard_name(n, generation, "idx");
            link_or_copy(&part.join(&e.bin), &out.join(&bin))?;
            link_or_copy(&part.join(&e.idx), &out.join(&idx))?;
            let src = part.join(sidecar_name(&e.bin));
            if src.exists() {
                link_or_copy(&src, &out.join(sidecar_name(&bin)))?;
            }
            manifest.num_docs += e.num_docs;
            manifest.num_tokens += e.num_tokens;
            manifest.shards.push(ShardEntry {
                bin,
                idx,
                ..e.clone()
            });
        }
    }
    fsync_dir(out)?;
    let bytes = manifest.to_bytes()?;
    write_atomic(
        &out.join(format!("{TMP_PREFIX}{FILE_NAME}")),
        &out.join(FILE_NAME),
        &bytes,
    )?;
    fsync_dir(out)?;
    remove_unlisted(out, &manifest);
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::source::{load_shard, write_for_dataset};
    use crate::shard::{DatasetWriter, VerifyOptions, WriterOptions};

    fn part(root: &Path, docs: &[Vec<u16>], tokenizer: Option<&str>) {
        let mut w = DatasetWriter::create(
            root,
            WriterOptions {
                shard_bytes: 6,
                tokenizer: tokenizer.map(str::to_string),
                eos_id: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
        for d in docs {
            w.add(d).unwrap();
        }
        w.close().unwrap();
        let rows: Vec<u64> = (0..docs.len() as u64).collect();
        write_for_dataset(root, &[(root.display().to_string(), 0)], &rows).unwrap();
    }

    #[test]
    fn merges_in_order_with_sources_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        part(&a, &[vec![1, 2], vec![3, 4, 5]], Some("t1"));
        part(&b, &[vec![6], vec![], vec![7, 8]], Some("t1"));
        let out = dir.path().join("out");
        let m = merge(&out, &[a.clone(), b.clone()], false).unwrap();
        assert_eq!(m.num_docs, 5);
        assert_eq!(m.tokenizer.as_deref(), Some("t1"));
        let ds = Dataset::open(&out).unwrap();
        let docs: Vec<Vec<u16>> = (0..5)
            .map(|i| match ds.doc(i).unwrap() {
                crate::Tokens::U16(t) => t.to_vec(),
                crate::Tokens::U32(_) => unreachable!(),
            })
            .collect();
        assert_eq!(
            docs,
            vec![vec![1, 2], vec![3, 4, 5], vec![6], vec![], vec![7, 8]]
        );
        crate::shard::verify(&out, VerifyOptions::default(), &crate::NoProgress).unwrap();
        let (s, j) = ds.locate(3).unwrap();
        let src = load_shard(&ds, s).unwrap();
        assert_eq!(src.get(j), Some((b.display().to_string().as_str(), 1)));
        // The parts are intact and a second merge needs overwrite.
        assert!(Dataset::open(&a).is_ok());
        assert!(matches!(
            merge(&out, std::slice::from_ref(&a), false),
            Err(Error::AlreadyExists { .. })
        ));
        let m = merge(&out, std::slice::from_ref(&b), true).unwrap();
        assert_eq!(m.num_docs, 3);
        let names = fs::read_dir(&out).unwrap().count();
        assert_eq!(names, 1 + 3 * m.shards.len(), "old generation removed");
    }

    #[test]
    fn refuses_other_tokenizers() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        part(&a, &[vec![1]], Some("t1"));
        part(&b, &[vec![2]], Some("t2"));
        let e = merge(&dir.path().join("out"), &[a, b], false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t1") && e.contains("t2") && e.contains("tokenizer"),
            "{e}"
        );
        assert!(!dir.path().join("out").join(FILE_NAME).exists());
    }
}
