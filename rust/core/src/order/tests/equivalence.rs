//! The fast graph, dedup, edge lookup and reference traversal against plain
//! re-implementations of their definitions, on random kNN lists (with
//! repeated ids in a row and missing entries).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::super::dedup::dedup;
use super::super::graph::{Graph, KnnLists};
use super::super::traverse::{traverse_reference, ReferenceParams};
use super::random_knn;

/// Undirected lists by definition: each pair once at its higher similarity,
/// sorted by similarity (descending) then id.
fn naive_graph(knn: &KnnLists<'_>) -> Vec<Vec<(u32, f32)>> {
    let mut pairs: BTreeMap<(u32, u32), f32> = BTreeMap::new();
    for i in 0..knn.n {
        for (j, s) in knn.row(i) {
            for key in [(i as u32, j), (j, i as u32)] {
                let e = pairs.entry(key).or_insert(s);
                *e = e.max(s);
            }
        }
    }
    let mut lists = vec![Vec::new(); knn.n];
    for ((a, b), s) in pairs {
        lists[a as usize].push((b, s));
    }
    for l in &mut lists {
        l.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
    }
    lists
}

/// The public script's loop and merge, with a set of open documents and
/// lists of segments; the segments left, in order.
fn naive_reference(knn: &KnnLists<'_>, active: &[bool], p: &ReferenceParams) -> Vec<Vec<u32>> {
    let near = |d: usize| -> Vec<u32> {
        knn.row_ids(d)
            .filter(|&j| active[j as usize])
            .take(p.k_traverse)
            .collect()
    };
    let mut open: BTreeSet<u32> = (0..knn.n as u32).filter(|&i| active[i as usize]).collect();
    let mut segs: Vec<Vec<u32>> = Vec::new();
    while let Some(start) = open.pop_first() {
        let mut seg = vec![start];
        while seg.len() < p.max_segment.max(1) {
            let last = *seg.last().unwrap() as usize;
            match near(last).into_iter().find(|j| open.contains(j)) {
                Some(j) => {
                    open.remove(&j);
                    seg.push(j);
                }
                None => break,
            }
        }
        segs.push(seg);
    }
    if p.min_segment > 1 {
        let mut seg_of = vec![usize::MAX; knn.n];
        for (s, seg) in segs.iter().enumerate() {
            for &d in seg {
                seg_of[d as usize] = s;
            }
        }
        for s in 0..segs.len() {
            if segs[s].len() >= p.min_segment {
                continue;
            }
            for d in segs[s].clone() {
                let t = near(d as usize).into_iter().find(|&j| {
                    let t = seg_of[j as usize];
                    t != s && !segs[t].is_empty()
                });
                if let Some(t) = t {
                    let ts = seg_of[t as usize];
                    let at = segs[ts].iter().position(|&x| x == t).unwrap();
                    segs[ts].insert(at, d);
                    segs[s].retain(|&x| x != d);
                    seg_of[d as usize] = ts;
                }
            }
        }
    }
    segs.retain(|s| !s.is_empty());
    segs
}

/// Random lists where some entries are missing (-1) and some name the row
/// itself (dropped on request).
fn holey_knn() -> impl Strategy<Value = (usize, usize, Vec<i64>, Vec<f32>)> {
    (random_knn(), proptest::collection::vec(0u8..10, 200)).prop_map(
        |((n, k, mut ids, sims), holes)| {
            for (e, id) in ids.iter_mut().enumerate() {
                match holes[e % holes.len()] {
                    0 => *id = -1,
                    1 => *id = (e / k) as i64,
                    _ => {}
                }
            }
            (n, k, ids, sims)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn graph_edges_and_dedup_match_their_definitions(
        (n, k, ids, sims) in holey_knn(),
        mask in proptest::collection::vec(any::<bool>(), 40),
        threshold in -0.5f32..1.0,
    ) {
        let l = KnnLists { n, k, ids: &ids, sims: Some(&sims), drop_self: true };
        let g = Graph::from_knn(&l).unwrap();
        let want = naive_graph(&l);
        for (i, w) in want.iter().enumerate() {
            let got: Vec<(u32, f32)> =
                g.neighbors(i).iter().copied().zip(g.sims(i).iter().copied()).collect();
            prop_assert_eq!(&got, w, "list of {}", i);
            for j in 0..n as u32 {
                let e = w.iter().find(|x| x.0 == j).map(|x| x.1);
                prop_assert_eq!(l.edge(i, j), e, "edge {} {}", i, j);
            }
        }
        let mut active = mask[..n].to_vec();
        let mut want_active = active.clone();
        let mut want_dups = Vec::new();
        for i in 0..n {
            if !want_active[i] {
                continue;
            }
            let hit = want[i]
                .iter()
                .take_while(|x| x.1 >= threshold)
                .find(|x| (x.0 as usize) < i && want_active[x.0 as usize]);
            if let Some(&(j, s)) = hit {
                want_active[i] = false;
                want_dups.push((i as u32, j, s));
            }
        }
        let got: Vec<(u32, u32, f32)> =
            dedup(&l, threshold, &mut active).iter().map(|d| (d.doc, d.of, d.sim)).collect();
        prop_assert_eq!(got, want_dups);
        prop_assert_eq!(active, want_active);
    }

    #[test]
    fn reference_traversal_matches_the_script(
        (n, k, ids, sims) in holey_knn(),
        mask in proptest::collection::vec(any::<bool>(), 40),
        k_traverse in 1usize..4,
        max_segment in 1usize..6,
        min_segment in 0usize..6,
    ) {
        let l = KnnLists { n, k, ids: &ids, sims: Some(&sims), drop_self: true };
        let active = mask[..n].to_vec();
        let p = ReferenceParams { k_traverse, max_segment, min_segment };
        let got = traverse_reference(&l, &active, &p);
        let want = naive_reference(&l, &active, &p);
        prop_assert_eq!(&got.docs, &want.concat());
        let ends: Vec<u64> = want.iter().scan(0u64, |end, s| { *end += s.len() as u64; Some(*end) }).collect();
        prop_assert_eq!(&got.segment_starts[1..], &ends[..]);
    }
}
