//! Ordering beyond one machine's memory: the steps of the staged engine
//! (`tokenloom.order(..., engine="ray")` runs each step's parts as Ray
//! tasks, `engine="disk"` runs them one after another in this process).
//! Every step reads and writes files under a work folder that all workers
//! see, so nothing of size documents × dimension passes through the driver:
//!
//! 1. embedding shards: the built-in embedder in two passes (document
//!    frequencies per part, summed; then each part projects its documents
//!    under the broadcast weights into a float16 `.npy`), or given `.npy`
//!    shards, read in place;
//! 2. centroids: spherical k-means on a seeded sample of rows (the driver);
//! 3. [`assign_part`]: each part assigns its rows to their nearest centroid
//!    and writes them grouped by list (ids and float16 unit rows);
//! 4. [`plan_groups`]: the lists are chained by centroid similarity and cut
//!    into groups of about equal work; each list is paired with its
//!    `nprobe - 1` nearest lists (the relation made symmetric, widened until
//!    it holds more than `k` documents), which may lie in other groups;
//! 5. [`knn_group`]: each group joins its lists with their partners (matrix
//!    products, each pair of lists once) and writes the top-k lists of its
//!    own documents (u32 ids, float16 similarities) by ascending id;
//! 6. [`finish_staged`]: the lists of all groups, merged by document into the
//!    global `[N, k]` graph, go through the local engine's near-duplicate
//!    removal and walk (one global walk), and the order is written.
//!
//! Each file is written atomically and checked when read (magic, version,
//! xxh3; the `.npy` files through their checksum file, see [`super::seal`],
//! by the tasks that assign and report), so a step whose file exists is
//! done: a re-run resumes there.

use std::path::{Path, PathBuf};

use half::f16;
use rayon::prelude::*;
use serde_json::json;
use xxhash_rust::xxh3::xxh3_64;

use super::finish::{self, Walked};
use super::graph::KnnLists;
use super::kmeans;
use super::knn::{self, join_lists};
use super::npy::VectorShards;
use super::partition::chain;
use super::report::Similarity;
use super::{walk, OrderParams, Ordered};
use crate::error::{Error, IoContext, Result};
use crate::io::{u32_le, u64_le, write_atomic, MappedFile};
use crate::progress::Progress;
use crate::shard::Dataset;
use crate::shuffle::{key_of, Permutation};

const LISTS_MAGIC: &[u8; 8] = b"TLOOMIVL";
const KNN_MAGIC: &[u8; 8] = b"TLOOMKNN";
const VERSION: u32 = 1;
const FIX: &str = "delete the file (or the work folder) and run the ordering again";
/// Rows assigned per chunk.
const CHUNK: usize = 4096;
/// Sentinel of a missing neighbour in the lists files.
const NONE: u32 = u32::MAX;

fn le32(v: &[u32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// A work file: magic, version, `words` header words, sections of bytes
/// (each padded to 8), xxh3 trailer.
fn write_file(dest: &Path, magic: &[u8; 8], words: &[u64], sections: &[&[u8]]) -> Result<()> {
    let mut out = Vec::new();
    out.extend_from_slice(magic);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(words.len() as u32).to_le_bytes());
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    for s in sections {
        out.extend_from_slice(s);
        out.resize(out.len().next_multiple_of(8), 0);
    }
    let sum = xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dest.with_file_name(format!(".tmp.{name}.{}", std::process::id()));
    write_atomic(&tmp, dest, &out)
}

/// A checked work file, mapped.
struct WorkFile {
    map: MappedFile,
    words: Vec<u64>,
    at: usize,
}

impl WorkFile {
    fn open(path: &Path, magic: &[u8; 8]) -> Result<Self> {
        let map = MappedFile::open(path)?;
        let b = map.bytes();
        let bad = |at: usize, what: &str| Error::corrupt(path, at as u64, what, FIX);
        if b.len() < 24 || &b[..8] != magic {
            return Err(bad(0, "not a work file of this step"));
        }
        if u32_le(b, 8) != VERSION {
            return Err(bad(8, "written by another version"));
        }
        let body = b.len() - 8;
        if xxh3_64(&b[..body]) != u64_le(b, body) {
            return Err(bad(body, "checksum mismatch (the file is damaged)"));
        }
        let nw = u32_le(b, 12) as usize;
        if 16 + 8 * nw > body {
            return Err(bad(12, "header cut short"));
        }
        let words = (0..nw).map(|i| u64_le(b, 16 + 8 * i)).collect();
        Ok(WorkFile {
            at: 16 + 8 * nw,
            map,
            words,
        })
    }

    /// The next section of `count` values of `T`, checked to lie in the file.
    fn take<T: bytemuck::Pod>(&mut self, count: usize) -> Result<&[T]> {
        let bytes = count * std::mem::size_of::<T>();
        let body = self.map.bytes().len() - 8;
        let at = self.at;
        if at + bytes > body {
            return Err(Error::corrupt(
                self.map.path(),
                at as u64,
                "sections run past the end",
                FIX,
            ));
        }
        self.at = at + bytes.next_multiple_of(8);
        bytemuck::try_cast_slice(&self.map.bytes()[at..at + bytes])
            .map_err(|_| Error::corrupt(self.map.path(), at as u64, "misaligned section", FIX))
    }
}

/// The rows of one part grouped by inverted list, as [`assign_part`] wrote them.
pub struct PartLists {
    file: WorkFile,
    dim: usize,
    /// `nlist + 1` offsets of each list's rows.
    offsets: Vec<usize>,
    ids_at: usize,
    rows_at: usize,
    featureless: Vec<u32>,
}

impl PartLists {
    /// Opens and checks a lists file.
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = WorkFile::open(path, LISTS_MAGIC)?;
        let [nlist, rows, dim, featureless] = file.words[..] else {
            return Err(Error::corrupt(path, 12, "wrong header", FIX));
        };
        let (nlist, rows, dim) = (nlist as usize, rows as usize, dim as usize);
        let counts = file.take::<u32>(nlist)?.to_vec();
        let featureless = file.take::<u32>(featureless as usize)?.to_vec();
        let ids_at = file.at;
        file.take::<u32>(rows)?;
        let rows_at = file.at;
        file.take::<u16>(rows * dim)?;
        let mut offsets = vec![0usize];
        for &c in &counts {
            offsets.push(offsets[offsets.len() - 1] + c as usize);
        }
        if offsets[nlist] != rows {
            return Err(Error::corrupt(path, 16, "list sizes do not add up", FIX));
        }
        Ok(PartLists {
            file,
            dim,
            offsets,
            ids_at,
            rows_at,
            featureless,
        })
    }

    /// Rows of each list in this part.
    pub fn counts(&self) -> Vec<u32> {
        self.offsets
            .windows(2)
            .map(|w| (w[1] - w[0]) as u32)
            .collect()
    }

    /// Documents of this part with tokens but no features (zero vectors).
    pub fn featureless(&self) -> &[u32] {
        &self.featureless
    }

    /// Appends the ids and float32 rows of list `l` to `ids` and `rows`.
    fn read_list(&self, l: usize, ids: &mut Vec<u32>, rows: &mut Vec<f32>) -> Result<()> {
        let (a, b) = (self.offsets[l], self.offsets[l + 1]);
        let bytes = self.file.map.bytes();
        let all_ids: &[u32] = bytemuck::try_cast_slice(&bytes[self.ids_at..self.ids_at + 4 * b])
            .map_err(|_| Error::corrupt(self.file.map.path(), 0, "misaligned", FIX))?;
        ids.extend_from_slice(&all_ids[a..b]);
        let d = self.dim;
        let vals: &[f16] =
            bytemuck::try_cast_slice(&bytes[self.rows_at + 2 * a * d..self.rows_at + 2 * b * d])
                .map_err(|_| Error::corrupt(self.file.map.path(), 0, "misaligned", FIX))?;
        rows.extend(vals.iter().map(|x| x.to_f32()));
        Ok(())
    }
}

/// The inverted lists of the staged engine for `n` documents, as
/// `(nlist, nprobe, train)`: about `2·√n` lists, trained on a sample of 16
/// rows each (see [`knn::default_nlist`]); each joined with its
/// [`NPROBE`](super::defaults::NPROBE) − 1 nearest lists, or, below
/// [`knn::EXACT_BELOW`] documents, with every other list: an exact search, as
/// the local engine runs there.
pub fn ivf_defaults(n: usize) -> (usize, usize, usize) {
    let nlist = knn::default_nlist(n);
    let nprobe = if n < knn::EXACT_BELOW {
        nlist
    } else {
        super::defaults::NPROBE.min(nlist)
    };
    (nlist, nprobe, knn::default_train_size(n, nlist))
}

/// Trains `nlist` unit centroids on a seeded sample of `sample` rows of the
/// shards (zero rows skipped), with `iterations` Lloyd steps.
pub fn train_centroids(
    shards: &VectorShards,
    nlist: usize,
    sample: usize,
    iterations: usize,
    seed: u64,
    progress: &dyn Progress,
) -> Result<Vec<f32>> {
    let n = shards.len();
    let d = shards.dim();
    let perm = Permutation::new(n as u64, key_of(&[seed, 0x7374_6167_6564]));
    let mut train = Vec::with_capacity(sample.min(n) * d);
    let mut row = vec![0f32; d];
    let mut taken = 0;
    for i in 0..n as u64 {
        if taken == sample {
            break;
        }
        if shards.unit_row_into(perm.get(i) as usize, &mut row)? {
            train.extend_from_slice(&row);
            taken += 1;
        }
    }
    if taken < nlist {
        return Err(Error::invalid(
            "nlist",
            format!(
                "{taken} documents with features cannot place {nlist} centroids; use fewer lists"
            ),
        ));
    }
    kmeans::train(&train, d, nlist, iterations, seed, progress)
}

/// Assigns the documents `first..end` of the shards (those with tokens,
/// `lengths[i - first] > 0`, and a non-zero vector) to their nearest of the
/// unit `centroids` and writes them grouped by list to `dest`, with the
/// documents that have tokens but a zero vector. Returns the list sizes.
pub fn assign_part(
    shards: &VectorShards,
    first: usize,
    lengths: &[u64],
    centroids: &[f32],
    dest: &Path,
    progress: &dyn Progress,
) -> Result<Vec<u32>> {
    let d = shards.dim();
    let nlist = centroids.len() / d.max(1);
    let end = first + lengths.len();
    shards.check_sealed(first..end)?;
    let mut ids = Vec::new();
    let mut labels = Vec::new();
    let mut rows16: Vec<f16> = Vec::new();
    let mut featureless = Vec::new();
    progress.start(
        "ordering: assigning documents to lists",
        lengths.len() as u64,
    );
    for a in (first..end).step_by(CHUNK) {
        progress.check()?;
        let b = (a + CHUNK).min(end);
        let rows: Vec<Result<Option<Vec<f32>>>> = (a..b)
            .into_par_iter()
            .map(|i| {
                if lengths[i - first] == 0 {
                    return Ok(None);
                }
                let mut row = vec![0f32; d];
                Ok(shards.unit_row_into(i, &mut row)?.then_some(row))
            })
            .collect();
        let mut chunk = Vec::new();
        for (i, r) in (a..b).zip(rows) {
            match r? {
                Some(row) => {
                    ids.push(i as u32);
                    chunk.extend_from_slice(&row);
                }
                None if lengths[i - first] > 0 => featureless.push(i as u32),
                None => {}
            }
        }
        labels.extend(kmeans::assign(&chunk, d, centroids, &crate::NoProgress)?);
        rows16.extend(chunk.iter().map(|&x| f16::from_f32(x)));
        progress.advance((b - a) as u64);
    }
    progress.finish();
    // Stable by list: within a list, ascending ids.
    let mut by_list: Vec<usize> = (0..ids.len()).collect();
    by_list.sort_by_key(|&r| labels[r]);
    let mut counts = vec![0u32; nlist];
    for &l in &labels {
        counts[l as usize] += 1;
    }
    let sorted_ids: Vec<u32> = by_list.iter().map(|&r| ids[r]).collect();
    let mut sorted_rows: Vec<f16> = Vec::with_capacity(rows16.len());
    for &r in &by_list {
        sorted_rows.extend_from_slice(&rows16[r * d..(r + 1) * d]);
    }
    write_file(
        dest,
        LISTS_MAGIC,
        &[
            nlist as u64,
            sorted_ids.len() as u64,
            d as u64,
            featureless.len() as u64,
        ],
        &[
            le32(&counts),
            le32(&featureless),
            le32(&sorted_ids),
            bytemuck::cast_slice(&sorted_rows),
        ],
    )?;
    Ok(counts)
}

/// The other lists by similarity of their centroid to list `a`'s, most
/// similar first (ties to the smaller id).
fn ranked(centroids: &[f32], d: usize, a: usize) -> Vec<u32> {
    let mut sims = Vec::new();
    crate::gemm::dot_rows(&centroids[a * d..(a + 1) * d], centroids, d, &mut sims);
    let mut ids: Vec<u32> = (0..sims.len() as u32)
        .filter(|&b| b as usize != a)
        .collect();
    ids.sort_by(|&x, &y| {
        sims[y as usize]
            .total_cmp(&sims[x as usize])
            .then(x.cmp(&y))
    });
    ids
}

/// Bytes a kNN task holds per vector value: float32 in memory and the
/// float16 it was read from.
pub const ROW_BYTES_PER_VALUE: u64 = 6;

/// The work of one group of lists: its lists and, for each, the lists it is
/// joined with (besides itself).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupPlan {
    /// Lists whose documents' neighbours this group finds.
    pub lists: Vec<u32>,
    /// For each of `lists`, its partner lists (ascending; any group).
    pub partners: Vec<Vec<u32>>,
}

/// Cuts the lists (sizes `sizes`, unit centroids `centroids`) into at least
/// `groups` groups of similar work, each list paired with its `nprobe - 1`
/// nearest lists and with the lists that name it, widened (by the next
/// nearest) until its documents have more than `k` candidates. A group is
/// also closed before the rows it holds (its lists and their partners) would
/// pass `memory` bytes at [`ROW_BYTES_PER_VALUE`] per value, so a task's
/// memory does not grow with the corpus; a single list whose partners alone
/// pass it is a group of its own.
pub fn plan_groups(
    sizes: &[u64],
    centroids: &[f32],
    d: usize,
    nprobe: usize,
    k: usize,
    groups: usize,
    memory: u64,
) -> Result<Vec<GroupPlan>> {
    let nlist = sizes.len();
    if centroids.len() != nlist * d || nprobe == 0 || groups == 0 {
        return Err(Error::invalid(
            "lists",
            format!("{nlist} lists, {} centroid values of dimension {d}, nprobe {nprobe}, {groups} groups", centroids.len()),
        ));
    }
    let wide = (nprobe - 1 + 16).min(nlist.saturating_sub(1));
    let nearest = kmeans::nearest_centroids(centroids, d, wide);
    let live = |l: u32| sizes[l as usize] > 0;
    let mut partners: Vec<Vec<u32>> = vec![Vec::new(); nlist];
    for a in 0..nlist {
        if sizes[a] == 0 {
            continue;
        }
        let (mut pool, mut taken) = (sizes[a], 0);
        let enough = |taken: usize, pool: u64| taken >= nprobe - 1 && pool > k as u64;
        let mut done = enough(0, pool);
        let mut take = |b: u32, partners: &mut Vec<Vec<u32>>| {
            partners[a].push(b);
            partners[b as usize].push(a as u32);
            pool += sizes[b as usize];
            taken += 1;
            enough(taken, pool)
        };
        for &b in nearest[a].iter().filter(|&&b| live(b)) {
            if done {
                break;
            }
            done = take(b, &mut partners);
        }
        if !done && nearest[a].len() < nlist - 1 {
            // Rare: the nearest lists hold too few documents; rank them all.
            let seen = &nearest[a];
            for b in ranked(centroids, d, a) {
                if done {
                    break;
                }
                if live(b) && !seen.contains(&b) {
                    done = take(b, &mut partners);
                }
            }
        }
    }
    for p in partners.iter_mut() {
        p.sort_unstable();
        p.dedup();
    }
    let cost: Vec<u64> = (0..nlist)
        .map(|a| {
            let cols: u64 = partners[a].iter().map(|&b| sizes[b as usize]).sum();
            sizes[a] * (sizes[a] + cols)
        })
        .collect();
    let total: u64 = cost.iter().sum();
    let order = chain(centroids, d);
    let mut out = Vec::new();
    let mut cur = GroupPlan {
        lists: Vec::new(),
        partners: Vec::new(),
    };
    let mut acc = 0u64;
    let max_rows = memory / (ROW_BYTES_PER_VALUE * d as u64).max(1);
    // The lists the current group reads (its own and their partners), and their rows.
    let mut held = std::collections::HashSet::new();
    let mut rows = 0u64;
    for l in order.into_iter().filter(|&l| sizes[l] > 0) {
        let new = |held: &std::collections::HashSet<u32>| -> u64 {
            std::iter::once(l as u32)
                .chain(partners[l].iter().copied())
                .filter(|b| !held.contains(b))
                .map(|b| sizes[b as usize])
                .sum()
        };
        if !cur.lists.is_empty() && rows + new(&held) > max_rows {
            out.push(std::mem::take(&mut cur));
            held.clear();
            rows = 0;
        }
        rows += new(&held);
        held.insert(l as u32);
        held.extend(partners[l].iter().copied());
        cur.lists.push(l as u32);
        cur.partners.push(partners[l].clone());
        acc += cost[l];
        if acc * groups as u64 >= total * (out.len() as u64 + 1) {
            out.push(std::mem::take(&mut cur));
            held.clear();
            rows = 0;
        }
    }
    if !cur.lists.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// Finds the `k` nearest neighbours of the documents of `plan`'s lists
/// among their lists and the partner lists, reading the rows from the parts'
/// lists files, and writes them to `dest` by ascending document id
/// (u32 ids, float16 similarities, missing entries as u32::MAX).
pub fn knn_group(
    parts: &[PathBuf],
    plan: &GroupPlan,
    k: usize,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<usize> {
    let parts = parts
        .iter()
        .map(|p| PartLists::open(p))
        .collect::<Result<Vec<_>>>()?;
    let Some(d) = parts.first().map(|p| p.dim) else {
        return Err(Error::invalid("parts", "no lists files"));
    };
    // Own lists first, then every partner list not owned, each read once.
    let own: std::collections::BTreeSet<u32> = plan.lists.iter().copied().collect();
    let mut order: Vec<u32> = plan.lists.clone();
    let mut seen = own.clone();
    for p in &plan.partners {
        for &b in p {
            if seen.insert(b) {
                order.push(b);
            }
        }
    }
    let local_of: std::collections::HashMap<u32, u32> = order
        .iter()
        .enumerate()
        .map(|(i, &l)| (l, i as u32))
        .collect();
    for part in &parts {
        if let Some(l) = order
            .iter()
            .find(|&&l| l as usize + 1 >= part.offsets.len())
        {
            return Err(Error::invalid(
                "lists",
                format!("list {l} is not in every part's file"),
            ));
        }
    }
    // Exactly the rows read (no doubling while they grow): the group's memory.
    let held: usize = order
        .iter()
        .map(|&l| {
            let l = l as usize;
            parts
                .iter()
                .map(|p| p.offsets[l + 1] - p.offsets[l])
                .sum::<usize>()
        })
        .sum();
    let (mut ids, mut rows) = (Vec::with_capacity(held), Vec::with_capacity(held * d));
    let mut lists: Vec<Vec<u32>> = Vec::with_capacity(order.len());
    for &l in &order {
        progress.check()?;
        let start = ids.len() as u32;
        for part in &parts {
            part.read_list(l as usize, &mut ids, &mut rows)?;
        }
        lists.push((start..ids.len() as u32).collect());
    }
    // The mapped float16 pages leave this process's memory with the maps.
    drop(parts);
    let near: Vec<Vec<u32>> = (0..order.len())
        .map(|i| match plan.partners.get(i) {
            Some(p) => p.iter().filter_map(|b| local_of.get(b).copied()).collect(),
            None => Vec::new(),
        })
        .collect();
    let graph = join_lists(&rows, d, k, &lists, &near, plan.lists.len(), progress)?;
    let owned = lists[..plan.lists.len()]
        .iter()
        .map(Vec::len)
        .sum::<usize>();
    let mut mine: Vec<(u32, usize)> = (0..owned).map(|r| (ids[r], r)).collect();
    mine.sort_unstable();
    let docs: Vec<u32> = mine.iter().map(|x| x.0).collect();
    let mut nb = Vec::with_capacity(owned * k);
    let mut sims = Vec::with_capacity(owned * k);
    for &(_, r) in &mine {
        for (&j, &s) in graph.neighbors(r).iter().zip(graph.sims(r)) {
            if j == NONE || !s.is_finite() {
                nb.push(NONE);
                sims.push(f16::ZERO);
            } else {
                nb.push(ids[j as usize]);
                sims.push(f16::from_f32(s));
            }
        }
    }
    write_file(
        dest,
        KNN_MAGIC,
        &[docs.len() as u64, k as u64],
        &[le32(&docs), le32(&nb), bytemuck::cast_slice(&sims)],
    )?;
    Ok(docs.len())
}

/// Merges the groups' lists into the global `[n, k]` kNN graph (ids as
/// `i64`, `-1` for none; similarities as `f32`), marking the documents listed.
pub fn merge_groups(
    knn: &[PathBuf],
    n: usize,
    k: usize,
) -> Result<(Vec<i64>, Vec<f32>, Vec<bool>)> {
    let mut ids = vec![-1i64; n * k];
    let mut sims = vec![0f32; n * k];
    let mut listed = vec![false; n];
    for path in knn {
        let mut f = WorkFile::open(path, KNN_MAGIC)?;
        let [m, kk] = f.words[..] else {
            return Err(Error::corrupt(path, 12, "wrong header", FIX));
        };
        if kk as usize != k {
            return Err(Error::corrupt(
                path,
                24,
                format!("k = {kk}, expected {k}"),
                FIX,
            ));
        }
        let m = m as usize;
        let docs = f.take::<u32>(m)?.to_vec();
        let nb = f.take::<u32>(m * k)?.to_vec();
        let ss = f.take::<f16>(m * k)?.to_vec();
        for (r, &doc) in docs.iter().enumerate() {
            let i = doc as usize;
            if i >= n || std::mem::replace(&mut listed[i], true) {
                return Err(Error::corrupt(
                    path,
                    0,
                    format!("document {doc} is out of range or in two groups"),
                    FIX,
                ));
            }
            for c in 0..k {
                let j = nb[r * k + c];
                if j != NONE {
                    ids[i * k + c] = j as i64;
                    sims[i * k + c] = ss[r * k + c].to_f32();
                }
            }
        }
    }
    Ok((ids, sims, listed))
}

/// The last step: the groups' lists (`knn`) merged into the global graph,
/// near-duplicates removed and one global walk, as in the local engine; the
/// documents with tokens but no features (from the parts' `lists` files)
/// after the path; the report against a random order (similarities read
/// from the shards); the order of `ds`, ready to write.
#[allow(clippy::too_many_arguments)]
pub fn finish_staged(
    ds: &Dataset,
    params: &OrderParams,
    shards: &VectorShards,
    lists: &[PathBuf],
    knn: &[PathBuf],
    mut settings: serde_json::Map<String, serde_json::Value>,
    source: serde_json::Value,
    progress: &dyn Progress,
) -> Result<Ordered> {
    let (lengths, mut clock) = finish::begin(ds, params)?;
    let n = lengths.len();
    if shards.len() != n {
        return Err(Error::invalid(
            "embeddings",
            format!("{} rows for {n} documents", shards.len()),
        ));
    }
    // The report reads every row: its shards are checked first (the parts
    // that assigned them may have run in an earlier run).
    shards.check_sealed(0..n)?;
    let k = params.k;
    let (ids, sims, mut active) = merge_groups(knn, n, k)?;
    let mut featureless = Vec::new();
    for p in lists {
        featureless.extend_from_slice(PartLists::open(p)?.featureless());
    }
    featureless.sort_unstable();
    clock.lap("merge");
    progress.check()?;
    let knn_lists = KnnLists {
        n,
        k,
        ids: &ids,
        sims: Some(&sims),
        drop_self: false,
    };
    let (duplicates, path) = walk(&knn_lists, &mut active, params, &mut clock, progress)?;
    let similarity = |a: u32, b: u32| shards.similarity(a as usize, b as usize);
    settings.insert("k".into(), json!(k));
    settings.insert("exact_knn".into(), json!(false));
    let walked = Walked {
        lengths: &lengths,
        path,
        featureless: &featureless,
        duplicates,
        sim: Similarity::Pairs(&similarity),
        knn: &knn_lists,
        settings,
    };
    finish::finish(ds, params, walked, source, clock)
}

/// Where the work of the order `name` of the dataset at `root` lives.
pub fn work_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let order = super::store::order_path(root, name)?;
    let dir = order
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join(format!(".{name}.work"));
    std::fs::create_dir_all(&dir).at(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests;
