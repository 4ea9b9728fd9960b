use proptest::prelude::*;

mod equivalence;

use super::graph::{Graph, KnnLists};
use super::traverse::{traverse, traverse_reference, ReferenceParams};
use super::*;
use crate::plan::{Plan, PlanMode};
use crate::shard::{DType, DatasetWriter, WriterOptions};
use crate::NoProgress;

fn lists(n: usize, k: usize, ids: &[i64], sims: Option<&[f32]>) -> Graph {
    Graph::from_knn(&KnnLists {
        n,
        k,
        ids,
        sims,
        drop_self: false,
    })
    .unwrap()
}

/// Random kNN lists without self-loops, similarities descending per row.
pub(super) fn random_knn() -> impl Strategy<Value = (usize, usize, Vec<i64>, Vec<f32>)> {
    (2usize..40, 1usize..6).prop_flat_map(|(n, k)| {
        let k = k.min(n - 1);
        (
            Just(n),
            Just(k),
            proptest::collection::vec(0..n as i64 - 1, n * k),
            proptest::collection::vec(-1f32..1.0, n * k),
        )
            .prop_map(|(n, k, raw, mut sims)| {
                // Shift ids >= row so that no row names itself.
                let ids: Vec<i64> = raw
                    .iter()
                    .enumerate()
                    .map(|(e, &j)| if j >= (e / k) as i64 { j + 1 } else { j })
                    .collect();
                for row in sims.chunks_mut(k) {
                    row.sort_by(|a, b| b.total_cmp(a));
                }
                (n, k, ids, sims)
            })
    })
}

fn is_permutation_of_active(docs: &[u32], active: &[bool]) -> bool {
    let mut seen = vec![false; active.len()];
    for &d in docs {
        if !active[d as usize] || std::mem::replace(&mut seen[d as usize], true) {
            return false;
        }
    }
    seen == active
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The graph is undirected, every list sorted by similarity, each id once, no self-loops.
    #[test]
    fn graph_is_symmetric_and_sorted((n, k, ids, sims) in random_knn()) {
        let g = lists(n, k, &ids, Some(&sims));
        for i in 0..n {
            let (nb, s) = (g.neighbors(i), g.sims(i));
            prop_assert!(s.windows(2).all(|w| w[0] >= w[1]));
            prop_assert!(!nb.contains(&(i as u32)));
            let mut sorted = nb.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), nb.len());
            for &j in nb {
                prop_assert!(g.neighbors(j as usize).contains(&(i as u32)));
            }
            for &j in &ids[i * k..(i + 1) * k] {
                prop_assert!(nb.contains(&(j as u32)));
            }
        }
    }

    /// Both traversals visit every active document exactly once; segments tile the path.
    #[test]
    fn traversals_visit_each_active_document_once((n, k, ids, sims) in random_knn(), mask in proptest::collection::vec(any::<bool>(), 40), seed in any::<u64>(), cap in 0usize..5) {
        let active: Vec<bool> = mask[..n].to_vec();
        let g = lists(n, k, &ids, Some(&sims));
        let p = traverse(&g, &active, seed, cap);
        prop_assert!(is_permutation_of_active(&p.docs, &active));
        prop_assert_eq!(p.segment_starts.first(), Some(&0));
        prop_assert_eq!(*p.segment_starts.last().unwrap(), p.docs.len() as u64);
        prop_assert!(p.segment_starts.windows(2).all(|w| w[0] < w[1]));
        if cap > 0 {
            prop_assert!(p.segment_starts.windows(2).all(|w| w[1] - w[0] <= cap as u64));
        }
        let l = KnnLists { n, k, ids: &ids, sims: Some(&sims), drop_self: false };
        let r = traverse_reference(&l, &active, &ReferenceParams { k_traverse: 3, max_segment: 4, min_segment: 3 });
        prop_assert!(is_permutation_of_active(&r.docs, &active));
        prop_assert_eq!(*r.segment_starts.last().unwrap(), r.docs.len() as u64);
    }

    /// Each step of a segment goes to the most similar neighbour not yet visited.
    #[test]
    fn each_step_is_the_best_unvisited_neighbour((n, k, ids, sims) in random_knn(), seed in any::<u64>()) {
        let active = vec![true; n];
        let g = lists(n, k, &ids, Some(&sims));
        let p = traverse(&g, &active, seed, 0);
        let mut visited = vec![false; n];
        for s in p.segment_starts.windows(2) {
            let seg = &p.docs[s[0] as usize..s[1] as usize];
            for w in seg.windows(2) {
                visited[w[0] as usize] = true;
                let best = g.neighbors(w[0] as usize).iter().find(|&&j| !visited[j as usize]);
                prop_assert_eq!(best, Some(&w[1]));
            }
            let last = *seg.last().unwrap() as usize;
            visited[last] = true;
            // A segment ends only when its last document has no unvisited neighbour.
            prop_assert!(g.neighbors(last).iter().all(|&j| visited[j as usize]));
        }
    }
}

#[test]
fn walks_start_at_minimum_degree_and_follow_the_strongest_edges() {
    // A path 0-1-2-3-4 with decreasing weights toward 4, plus nothing else.
    let ids = [1, -1, 2, 0, 3, 1, 4, 2, 3, -1];
    let sims = [0.9, 0.0, 0.8, 0.9, 0.7, 0.8, 0.6, 0.7, 0.6, 0.0];
    let g = lists(5, 2, &ids, Some(&sims));
    let p = traverse(&g, &[true; 5], 7, 0);
    // Ends of the path have degree 1: the walk starts at one of them and runs through.
    assert!(
        p.docs == [0, 1, 2, 3, 4] || p.docs == [4, 3, 2, 1, 0],
        "{:?}",
        p.docs
    );
    assert_eq!(p.num_segments(), 1);
}

#[test]
fn walks_start_at_path_ends_not_at_the_lowest_id() {
    // 12 chains of 15 documents, ids shuffled so that most chains have their
    // lowest id inside: walks from minimum-degree documents (the chains' ends)
    // run each chain in one segment; walks from the lowest unvisited id would
    // start inside and need a second segment for the rest of the chain.
    let (chains, len) = (12usize, 15usize);
    let n = chains * len;
    let p = crate::shuffle::Permutation::new(n as u64, 3);
    let id = |c: usize, i: usize| p.get((c * len + i) as u64) as i64;
    let (mut ids, mut sims) = (vec![-1i64; n * 2], vec![0f32; n * 2]);
    for c in 0..chains {
        for i in 0..len {
            let me = id(c, i) as usize;
            let mut slot = 0;
            for j in [i.wrapping_sub(1), i + 1] {
                if j < len {
                    ids[me * 2 + slot] = id(c, j);
                    sims[me * 2 + slot] = 0.9 - 0.01 * i.min(j) as f32;
                    slot += 1;
                }
            }
            if slot == 2 && sims[me * 2] < sims[me * 2 + 1] {
                ids.swap(me * 2, me * 2 + 1);
                sims.swap(me * 2, me * 2 + 1);
            }
        }
    }
    let inside = (0..chains)
        .filter(|&c| {
            let lowest = (0..len).min_by_key(|&i| id(c, i)).unwrap_or(0);
            lowest != 0 && lowest != len - 1
        })
        .count();
    assert!(
        inside >= chains / 2,
        "the shuffle left only {inside} chains with an inner lowest id"
    );
    let g = lists(n, 2, &ids, Some(&sims));
    let path = traverse(&g, &vec![true; n], 0, 0);
    assert_eq!(path.num_segments(), chains, "{:?}", path.segment_starts);
    for seg in path.segment_starts.windows(2) {
        assert_eq!(seg[1] - seg[0], len as u64);
    }
}

#[test]
fn dedup_keeps_the_first_copy_only() {
    // 0 and 2 are near-copies (0.99), 1 is merely related (0.5).
    let ids = [2, 1, 2, 0, 0, 1];
    let sims = [0.99, 0.5, 0.5, 0.5, 0.99, 0.5];
    let l = KnnLists {
        n: 3,
        k: 2,
        ids: &ids,
        sims: Some(&sims),
        drop_self: false,
    };
    let mut active = vec![true; 3];
    let d = dedup::dedup(&l, 0.95, &mut active);
    assert_eq!(active, [true, true, false]);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].doc, d[0].of), (2, 0));
}

#[test]
fn bad_knn_matrices_are_refused_with_row_and_rank() {
    let check = |ids: &[i64], sims: Option<&[f32]>, want: &str| {
        let l = KnnLists {
            n: 3,
            k: 2,
            ids,
            sims,
            drop_self: false,
        };
        let e = Graph::from_knn(&l).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    };
    check(&[1, 2, 0, 7, 0, 1], None, "row 1, rank 1 names document 7");
    check(
        &[1, 2, 1, 2, 0, 1],
        None,
        "row 1, rank 0 names the document itself",
    );
    check(&[1, 2, 0, 2], None, "expected an [n, k] matrix");
    check(
        &[1, 2, 0, 2, 0, 1],
        Some(&[1.0, f32::NAN, 0.0, 0.0, 0.0, 0.0]),
        "row 0, rank 1 has similarity NaN",
    );
    // -1 (no neighbour) is skipped; self-loops are dropped on request.
    let ok = KnnLists {
        n: 3,
        k: 2,
        ids: &[0, 1, -1, 0, 2, 1],
        sims: None,
        drop_self: true,
    };
    let g = Graph::from_knn(&ok).unwrap();
    assert_eq!(g.neighbors(0), &[1]);
    assert_eq!(g.num_edges(), 2);
}

#[test]
fn reference_merge_moves_short_segments_next_to_their_neighbours() {
    // Lowest-id starts, k_traverse 1, segments capped at 2: [0 1] [2 3] [4] and 4's
    // first neighbour is 1, so 4 joins segment 0 just before 1.
    let ids = [1, 0, 3, 2, 1];
    let l = KnnLists {
        n: 5,
        k: 1,
        ids: &ids,
        sims: None,
        drop_self: false,
    };
    let p = traverse_reference(
        &l,
        &[true; 5],
        &ReferenceParams {
            k_traverse: 1,
            max_segment: 2,
            min_segment: 2,
        },
    );
    assert_eq!(p.docs, [0, 4, 1, 2, 3]);
    assert_eq!(p.segment_starts, [0, 3, 5]);
}

/// Documents of two "topics" (disjoint token ranges), interleaved by id, plus
/// an exact copy and an empty document.
pub(super) fn topical_dataset(dir: &std::path::Path) -> Dataset {
    let opts = WriterOptions {
        dtype: DType::U16,
        eos_id: Some(0),
        vocab_size: Some(1000),
        ..Default::default()
    };
    let mut w = DatasetWriter::create(dir, opts).unwrap();
    for d in 0..60u32 {
        let base = if d % 2 == 0 { 1 } else { 500 };
        let doc: Vec<u32> = (0..40u32)
            .map(|i| base + (d * 7 + i * i * 13) % 400)
            .chain([0])
            .collect();
        w.add(&doc).unwrap();
    }
    let copy: Vec<u32> = ds_doc(0);
    w.add(&copy).unwrap();
    w.add::<u32>(&[]).unwrap();
    w.close().unwrap();
    Dataset::open(dir).unwrap()
}

fn ds_doc(d: u32) -> Vec<u32> {
    (0..40u32)
        .map(|i| 1 + (d * 7 + i * i * 13) % 400)
        .chain([0])
        .collect()
}

#[test]
fn builtin_pipeline_groups_topics_drops_copies_and_plans_flowing_rows() {
    let dir = tempfile::tempdir().unwrap();
    let ds = topical_dataset(dir.path());
    let params = OrderParams {
        seq_len: 63,
        k: 5,
        dedup: Some(0.95),
        ..OrderParams::default()
    };
    let out = order_dataset(
        &ds,
        &params,
        Input::Builtin,
        serde_json::json!({"embeddings": "builtin"}),
        &NoProgress,
    )
    .unwrap();
    let r = &out.report;
    assert_eq!((r.docs, r.empty, r.duplicates), (62, 1, 1));
    assert_eq!(out.duplicates[0].doc, 60);
    assert_eq!(out.duplicates[0].of, 0);
    assert_eq!(r.ordered, 60);
    // Same-topic neighbours: adjacent documents are far more similar than at random.
    assert!(
        r.ordered_pairs.mean_similarity > 2.0 * r.random_pairs.mean_similarity,
        "{r:?}"
    );
    let same_topic = out
        .order
        .docs()
        .to_vec()
        .windows(2)
        .filter(|w| w[0] % 2 == w[1] % 2)
        .count();
    // At random about half would; walks only change topic at a restart.
    assert!(
        same_topic >= 45,
        "{same_topic} of 59 adjacent pairs share a topic"
    );

    // Written, read back with its metadata, and laid out as one stream of rows.
    let path = dir.path().join("iclm.order");
    out.order.write(&path).unwrap();
    let back = crate::order_file::Order::read(&path).unwrap();
    assert_eq!(back, out.order);
    assert!(back.flow());
    let meta: serde_json::Value = serde_json::from_str(back.meta()).unwrap();
    assert_eq!(meta["report"]["duplicates"], 1);
    assert_eq!(meta["source"]["embeddings"], "builtin");
    let plan = Plan::build(&ds, PlanMode::Ordered, 63, Some(&back)).unwrap();
    let tokens: u64 = out
        .order
        .docs()
        .iter()
        .map(|d| ds.doc(d).unwrap().len() as u64)
        .sum();
    assert_eq!(plan.num_samples(), tokens.div_ceil(64));
}

#[test]
fn embeddings_and_knn_inputs_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let ds = topical_dataset(dir.path());
    let n = ds.num_docs() as usize;
    let p = OrderParams {
        k: 3,
        ..OrderParams::default()
    };
    let err = |input: Input<'_>| {
        order_dataset(&ds, &p, input, serde_json::Value::Null, &NoProgress)
            .unwrap_err()
            .to_string()
    };
    let short = vec![1f32; (n - 1) * 4];
    assert!(err(Input::Embeddings {
        data: Values::F32(&short),
        dim: 4
    })
    .contains("one row per document"));
    let mut zero = vec![1f32; n * 4];
    zero[8..12].fill(0.0);
    assert!(err(Input::Embeddings {
        data: Values::F32(&zero),
        dim: 4
    })
    .contains("row 2 is all zeros"));
    let mut nan = vec![1f32; n * 4];
    nan[5] = f32::INFINITY;
    assert!(err(Input::Embeddings {
        data: Values::F32(&nan),
        dim: 4
    })
    .contains("row 1 has inf"));
    let ids: Vec<i64> = (0..n as i64).map(|i| (i + 1) % n as i64).collect();
    let l = KnnLists {
        n,
        k: 1,
        ids: &ids,
        sims: None,
        drop_self: false,
    };
    assert!(err(Input::Knn(l)).contains("needs similarities"));
    let big = OrderParams {
        k: 200,
        ..OrderParams::default()
    };
    let e = order_dataset(
        &ds,
        &big,
        Input::Builtin,
        serde_json::Value::Null,
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("200 neighbours"), "{e}");
}

#[test]
fn a_cancelled_run_stops_with_cancelled_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ds = topical_dataset(dir.path());
    let e = order_dataset(
        &ds,
        &OrderParams::default(),
        Input::Builtin,
        serde_json::Value::Null,
        &crate::progress::AlwaysCancelled,
    )
    .unwrap_err();
    assert!(matches!(e, crate::Error::Cancelled), "{e}");
    assert!(store::list(dir.path()).is_empty());
}
