//! Criterion benchmarks of the kernels whose tuning the code states: the
//! matrix-product kernel chosen by output shape (`gemm::GEMM_ROWS`), the
//! selector's distance sums and the exact kNN products built on it, the keyed
//! Feistel permutation, and the ICLM traversals. `cargo bench -p
//! tokenloom-core` runs them; docs/benchmarks-kernels.md says what each one
//! checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokenloom_core::gemm::{dot_rows_with, kernel_for, Kernel, GEMM_ROWS};
use tokenloom_core::order::knn::exact;
use tokenloom_core::order::traverse::{traverse, traverse_reference};
use tokenloom_core::order::{Graph, KnnLists, ReferenceParams};
use tokenloom_core::select::distance_sums;
use tokenloom_core::shuffle::{mix64, Permutation};
use tokenloom_core::NoProgress;

/// `len` floats in [-1, 1), the same for the same `salt`.
fn floats(len: usize, salt: u64) -> Vec<f32> {
    (0..len as u64)
        .map(|i| (mix64(salt ^ mix64(i)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect()
}

/// Rows of unit length (what the kNN search is given).
fn unit_rows(n: usize, d: usize, salt: u64) -> Vec<f32> {
    let mut v = floats(n * d, salt);
    for row in v.chunks_exact_mut(d) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Both kernels on outputs of `m` rows × `c` columns, below and above
/// `GEMM_ROWS`: the kernel `kernel_for` picks should be the faster one.
fn kernel_choice(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("dot_rows");
    let shapes = [
        (16, 1024, 1024),
        (64, 1024, 768),
        (128, 1024, 1024),
        (GEMM_ROWS, 1024, 768),
        (512, 512, 384),
        (1024, 64, 1024),
    ];
    for (m, c, dim) in shapes {
        let (a, b) = (floats(m * dim, 1), floats(c * dim, 2));
        let mut out = Vec::new();
        g.throughput(Throughput::Elements((m * c * dim) as u64));
        for kernel in [Kernel::Gemm, Kernel::MatrixMultiply] {
            let chosen = if kernel_for(m, c) == kernel {
                " (chosen)"
            } else {
                ""
            };
            let id = BenchmarkId::new(format!("{kernel:?}{chosen}"), format!("{m}x{c}x{dim}"));
            g.bench_function(id, |bench| {
                bench.iter(|| dot_rows_with(kernel, black_box(&a), black_box(&b), dim, &mut out))
            });
        }
    }
    g.finish();
}

/// The selector's diversity term: each candidate's distance sum to a
/// 1,024-row memory of 1,024-float sketches (FastJL 8 × 128), in two
/// 512-row tasks.
fn selector_distances(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("distance_sums");
    let (memory, dim) = (1024, 1024);
    let others = floats(memory * dim, 3);
    for batch in [32, 256] {
        let rows = floats(batch * dim, 4);
        g.throughput(Throughput::Elements((batch * memory) as u64));
        g.bench_function(BenchmarkId::new("memory1024xdim1024", batch), |bench| {
            bench.iter(|| distance_sums(black_box(&rows), black_box(&others), dim))
        });
    }
    g.finish();
}

/// The exact kNN graph: all pairs in 512-row blocks through the same
/// products.
fn knn_products(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("knn_exact");
    g.sample_size(10);
    let (n, d, k) = (4096, 256, 10);
    let emb = unit_rows(n, d, 5);
    g.throughput(Throughput::Elements((n * n) as u64));
    g.bench_function(BenchmarkId::new("n4096xd256", k), |bench| {
        bench.iter(|| exact(black_box(&emb), n, d, k, &NoProgress).unwrap())
    });
    g.finish();
}

/// Random access into the keyed permutation: a size that fills its Feistel
/// domain (no cycle walking) and one just past a power of four (the domain
/// is four times the size: about four rounds of walking per position).
fn permutation(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("permutation");
    let positions: u64 = 1 << 16;
    g.throughput(Throughput::Elements(positions));
    for n in [1u64 << 20, (1u64 << 20) + 1] {
        let p = Permutation::new(n, 42);
        g.bench_function(BenchmarkId::new("get", n), |bench| {
            bench.iter(|| {
                let mut acc = 0u64;
                for i in 0..positions {
                    acc ^= p.get(black_box(i * 7 % n));
                }
                acc
            })
        });
    }
    g.finish();
}

/// A kNN list of `n` documents: neighbours drawn near each document (so the
/// walk finds unvisited neighbours, as on real data), similarities falling
/// with rank.
fn knn_lists(n: usize, k: usize) -> (Vec<i64>, Vec<f32>) {
    let mut ids = Vec::with_capacity(n * k);
    let mut sims = Vec::with_capacity(n * k);
    for i in 0..n {
        for r in 0..k {
            let h = mix64((i * k + r) as u64);
            let j = (i as u64 + 1 + h % 4096) % n as u64;
            ids.push(j as i64);
            sims.push(1.0 - r as f32 / k as f32 - (h >> 60) as f32 * 1e-3);
        }
    }
    (ids, sims)
}

/// The paper's traversal (minimum-degree starts, adjacency lists prefetched
/// ahead of the walk) and the reference script's variant.
fn traversal(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("traverse");
    g.sample_size(10);
    let (n, k) = (200_000, 10);
    let (ids, sims) = knn_lists(n, k);
    let knn = KnnLists {
        n,
        k,
        ids: &ids,
        sims: Some(&sims),
        drop_self: true,
    };
    let graph = Graph::from_knn(&knn).unwrap();
    let active = vec![true; n];
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::new("paper", n), |bench| {
        bench.iter(|| traverse(black_box(&graph), &active, 0, 0))
    });
    let params = ReferenceParams::default();
    g.bench_function(BenchmarkId::new("reference", n), |bench| {
        bench.iter(|| traverse_reference(black_box(&knn), &active, &params))
    });
    g.finish();
}

criterion_group! {
    name = kernels;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = kernel_choice, selector_distances, knn_products, permutation, traversal
}
criterion_main!(kernels);
