use proptest::prelude::*;

use super::*;
use crate::order::npy::NpyWriter;
use crate::shard::DatasetWriter;
use crate::shuffle::mix64;
use crate::NoProgress;

const D: usize = 16;

/// A uniform draw in [-1, 1) from (seed, i).
fn unit(seed: u64, i: u64) -> f32 {
    (mix64(seed ^ mix64(i)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// `n` rows around 8 centres; rows in `zero` are all zeros.
fn rows(n: usize, zero: &[usize]) -> Vec<f32> {
    let mut v = Vec::with_capacity(n * D);
    for i in 0..n {
        let c = mix64(i as u64) % 8;
        for j in 0..D {
            let x = unit(1, c * D as u64 + j as u64) + 0.5 * unit(2, (i * D + j) as u64);
            v.push(if zero.contains(&i) { 0.0 } else { x });
        }
    }
    v
}

/// A dataset of `n` documents (those in `empty` without tokens) and its
/// vectors as two float16 shards (split at row 400).
fn corpus(dir: &Path, n: usize, empty: &[usize], zero: &[usize]) -> (Dataset, Vec<PathBuf>) {
    let mut w = DatasetWriter::create(dir.join("ds"), Default::default()).unwrap();
    for i in 0..n {
        let doc: &[u16] = if empty.contains(&i) { &[] } else { &[3, 4] };
        w.add(doc).unwrap();
    }
    w.close().unwrap();
    let v = rows(n, zero);
    let cut = n.min(400);
    let mut shards = Vec::new();
    for (s, (a, b)) in [(0, cut), (cut, n)].into_iter().enumerate() {
        let path = dir.join(format!("v{s}.npy"));
        let mut w = NpyWriter::create(&path, b - a, D).unwrap();
        w.push(&v[a * D..b * D]).unwrap();
        w.finish().unwrap();
        shards.push(path);
    }
    (Dataset::open(dir.join("ds")).unwrap(), shards)
}

/// The unit rows as the lists files hold them (float16), zero rows `None`.
fn stored(shards: &VectorShards) -> Vec<Option<Vec<f32>>> {
    (0..shards.len())
        .map(|i| {
            let mut row = vec![0f32; D];
            let live = shards.unit_row_into(i, &mut row).unwrap();
            live.then(|| row.iter().map(|&x| f16::from_f32(x).to_f32()).collect())
        })
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// The merged `[n, k]` ids, similarities and the documents listed.
type Merged = (Vec<i64>, Vec<f32>, Vec<bool>);

/// Every step of the staged engine over `parts` parts and `groups` groups:
/// the merged `[n, k]` ids, similarities and the documents listed.
fn run(
    dir: &Path,
    ds: &Dataset,
    shards: &VectorShards,
    parts: usize,
    setup: (usize, usize, usize, usize),
) -> Merged {
    run_within(dir, ds, shards, parts, setup, u64::MAX).1
}

/// [`run`] with each kNN task held to `memory` bytes of rows; also returns
/// the number of groups.
fn run_within(
    dir: &Path,
    ds: &Dataset,
    shards: &VectorShards,
    parts: usize,
    (nlist, nprobe, k, groups): (usize, usize, usize, usize),
    memory: u64,
) -> (usize, Merged) {
    let n = shards.len();
    let centroids = train_centroids(shards, nlist, n, 10, 0, &NoProgress).unwrap();
    let mut sizes = vec![0u64; nlist];
    let mut files = Vec::new();
    for p in 0..parts {
        let (a, b) = (p * n / parts, (p + 1) * n / parts);
        let lengths: Vec<u64> = (a..b)
            .map(|i| ds.doc(i as u64).unwrap().len() as u64)
            .collect();
        let file = dir.join(format!("lists-{p}.ivl"));
        let counts = assign_part(shards, a, &lengths, &centroids, &file, &NoProgress).unwrap();
        for (s, c) in sizes.iter_mut().zip(counts) {
            *s += c as u64;
        }
        files.push(file);
    }
    let plans = plan_groups(&sizes, &centroids, D, nprobe, k, groups, memory).unwrap();
    assert!(plans.len() >= groups.min(nlist));
    for plan in &plans {
        // The rows a group reads: its lists and their partners, each once.
        let mut held: Vec<u32> = plan.lists.clone();
        held.extend(plan.partners.iter().flatten());
        held.sort_unstable();
        held.dedup();
        let rows: u64 = held.iter().map(|&l| sizes[l as usize]).sum();
        assert!(
            rows * D as u64 * ROW_BYTES_PER_VALUE <= memory || plan.lists.len() == 1,
            "a group of {} lists holds {rows} rows",
            plan.lists.len()
        );
    }
    let knn: Vec<PathBuf> = (0..plans.len())
        .map(|g| dir.join(format!("knn-{g}.knn")))
        .collect();
    for (plan, out) in plans.iter().zip(&knn) {
        knn_group(&files, plan, k, out, &NoProgress).unwrap();
    }
    (plans.len(), merge_groups(&knn, n, k).unwrap())
}

/// Recall of the lists against the exact neighbours of the stored rows,
/// after checking that every listed similarity is the true one.
fn recall(ids: &[i64], sims: &[f32], listed: &[bool], rows: &[Option<Vec<f32>>], k: usize) -> f64 {
    let (mut found, mut wanted) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let Some(row) = row.as_ref().filter(|_| listed[i]) else {
            continue;
        };
        let mut exact: Vec<(f64, usize)> = (0..rows.len())
            .filter(|&j| j != i && listed[j])
            .filter_map(|j| rows[j].as_ref().map(|r| (dot(row, r), j)))
            .collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        let got = &ids[i * k..(i + 1) * k];
        for (c, &j) in got.iter().enumerate() {
            assert!(j >= 0 && j as usize != i, "row {i}: {got:?}");
            let true_sim = dot(row, rows[j as usize].as_ref().unwrap());
            assert!(
                (true_sim - sims[i * k + c] as f64).abs() < 2e-3,
                "row {i} col {c}"
            );
        }
        let mut distinct = got.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            k,
            "row {i} lists a neighbour twice: {got:?}"
        );
        // A neighbour counts when it is one of the exact k, or ties with the k-th.
        let bar = exact[k - 1].0 - 1e-6;
        found += got
            .iter()
            .filter(|&&j| dot(row, rows[j as usize].as_ref().unwrap()) >= bar)
            .count();
        wanted += k;
    }
    found as f64 / wanted as f64
}

#[test]
fn joined_with_every_list_the_staged_lists_are_the_exact_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let (empty, zero) = ([5, 77], [9, 300, 599]);
    let (ds, files) = corpus(dir.path(), 600, &empty, &zero);
    let shards = VectorShards::open(&files, 600).unwrap();
    let rows = stored(&shards);
    let k = 6;
    let (ids, sims, listed) = run(dir.path(), &ds, &shards, 2, (24, 24, k, 3));
    for (i, &l) in listed.iter().enumerate() {
        assert_eq!(l, !empty.contains(&i) && !zero.contains(&i), "document {i}");
    }
    assert_eq!(recall(&ids, &sims, &listed, &rows, k), 1.0);
    // The featureless documents (tokens, zero vector) are kept by the parts' files.
    let a = PartLists::open(&dir.path().join("lists-0.ivl")).unwrap();
    let b = PartLists::open(&dir.path().join("lists-1.ivl")).unwrap();
    assert_eq!(
        (a.featureless(), b.featureless()),
        (&[9u32][..], &[300u32, 599][..])
    );
    assert_eq!(a.counts().iter().chain(&b.counts()).sum::<u32>(), 600 - 5);
}

#[test]
fn fewer_probes_keep_most_neighbours_and_groups_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, files) = corpus(dir.path(), 600, &[], &[]);
    let shards = VectorShards::open(&files, 600).unwrap();
    let rows = stored(&shards);
    let k = 6;
    let (ids, sims, listed) = run(dir.path(), &ds, &shards, 3, (24, 4, k, 4));
    assert!(listed.iter().all(|&l| l));
    let r = recall(&ids, &sims, &listed, &rows, k);
    assert!(r > 0.95, "recall {r}");
    // One group finds the same lists: each list meets the same partners.
    let (one, one_sims, _) = run(dir.path(), &ds, &shards, 3, (24, 4, k, 1));
    let same = ids.iter().zip(&one).filter(|(a, b)| a == b).count();
    assert!(
        same as f64 >= 0.99 * ids.len() as f64,
        "{same} of {}",
        ids.len()
    );
    let close = sims
        .iter()
        .zip(&one_sims)
        .all(|(a, b)| (a - b).abs() < 2e-3);
    assert!(close);
}

#[test]
fn a_memory_bound_cuts_more_groups_and_changes_no_neighbour() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, files) = corpus(dir.path(), 600, &[], &[]);
    let shards = VectorShards::open(&files, 600).unwrap();
    let k = 6;
    let (free, (ids, sims, _)) = run_within(dir.path(), &ds, &shards, 3, (24, 4, k, 2), u64::MAX);
    // About a sixth of the rows per group: each group then reads far fewer rows.
    let memory = 100 * D as u64 * ROW_BYTES_PER_VALUE;
    let (bound, (b_ids, b_sims, _)) =
        run_within(dir.path(), &ds, &shards, 3, (24, 4, k, 2), memory);
    assert!(
        bound > free,
        "{bound} groups within the bound, {free} without"
    );
    assert_eq!(ids, b_ids);
    assert_eq!(sims, b_sims);
}

#[test]
fn damaged_work_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, files) = corpus(dir.path(), 300, &[], &[]);
    let shards = VectorShards::open(&files, 300).unwrap();
    let (_, _, listed) = run(dir.path(), &ds, &shards, 2, (8, 2, 4, 2));
    assert!(listed.iter().all(|&l| l));
    let lists = dir.path().join("lists-1.ivl");
    let knn = dir.path().join("knn-0.knn");
    let good = std::fs::read(&lists).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 1;
    std::fs::write(&lists, &bad).unwrap();
    let err = PartLists::open(&lists).err().unwrap().to_string();
    assert!(
        err.contains("lists-1.ivl") && err.contains("checksum"),
        "{err}"
    );
    std::fs::write(&lists, &good[..good.len() - 9]).unwrap();
    assert!(PartLists::open(&lists).is_err());
    std::fs::write(&lists, &good).unwrap();
    PartLists::open(&lists).unwrap();

    let other = dir.path().join("knn-1.knn");
    let err = merge_groups(&[knn.clone(), knn.clone()], 300, 4)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("in two groups"), "{err}");
    let err = merge_groups(&[knn.clone(), other], 300, 5)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("knn-0.knn") && err.contains("k = 4, expected 5"),
        "{err}"
    );
    let mut bytes = std::fs::read(&knn).unwrap();
    bytes[30] ^= 0x40;
    std::fs::write(&knn, &bytes).unwrap();
    let err = merge_groups(&[knn], 300, 4).err().unwrap().to_string();
    assert!(err.contains("checksum"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every list with documents lies in one group; partners are symmetric,
    /// never the list itself or an empty list, include the list's nearest
    /// `nprobe - 1` lists with documents, and give its documents more than `k`
    /// candidates when the nearest lists can.
    #[test]
    fn groups_cover_each_list_once_with_symmetric_partners(
        nlist in 1usize..40,
        seed in 0u64..1000,
        nprobe in 1usize..8,
        k in 1usize..30,
        groups in 1usize..6,
    ) {
        let d = 4;
        let mut c: Vec<f32> = (0..nlist * d).map(|i| unit(seed, i as u64)).collect();
        for row in c.chunks_mut(d) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        let sizes: Vec<u64> = (0..nlist).map(|l| mix64(seed ^ l as u64) % 5).collect();
        let plans = plan_groups(&sizes, &c, d, nprobe, k, groups, u64::MAX).unwrap();
        let mut owner = vec![None; nlist];
        let mut partners = vec![Vec::new(); nlist];
        for (g, p) in plans.iter().enumerate() {
            prop_assert!(!p.lists.is_empty());
            for (&l, ps) in p.lists.iter().zip(&p.partners) {
                prop_assert!(owner[l as usize].replace(g).is_none());
                partners[l as usize] = ps.clone();
            }
        }
        let live: Vec<usize> = (0..nlist).filter(|&l| sizes[l] > 0).collect();
        for l in 0..nlist {
            prop_assert_eq!(owner[l].is_some(), sizes[l] > 0);
        }
        prop_assert!(plans.len() <= groups);
        let near = crate::order::kmeans::nearest_centroids(&c, d, nlist);
        for &a in &live {
            let ps = &partners[a];
            prop_assert!(ps.windows(2).all(|w| w[0] < w[1]));
            for &b in ps {
                prop_assert!(b as usize != a && sizes[b as usize] > 0);
                prop_assert!(partners[b as usize].contains(&(a as u32)));
            }
            let nearest: Vec<u32> =
                near[a].iter().copied().filter(|&b| sizes[b as usize] > 0).collect();
            for b in nearest.iter().take(nprobe - 1) {
                prop_assert!(ps.contains(b));
            }
            let pool = sizes[a] + ps.iter().map(|&b| sizes[b as usize]).sum::<u64>();
            prop_assert!(pool > k as u64 || ps.len() + 1 == live.len(), "pool {}", pool);
        }
    }
}
