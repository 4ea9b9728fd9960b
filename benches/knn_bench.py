"""Self-kNN graph (every row a query, self excluded): tokenloom against faiss-cpu.

    python benches/knn_bench.py [--n 100000] [--d 384] [--k 10] [--threads 2]

Data: a synthetic stand-in for document embeddings (nothing is downloaded): ``--clusters``
Gaussian clusters of log-normal sizes around 64 topic directions and one direction common to
all, each cluster spread along 48 directions of its own with a log-uniform width in
[0.6, 1.2], plus isotropic noise of norm 0.3, L2-normalised; fixed seed. The script prints
the mean cosine of random pairs and of the true nearest neighbours, to compare the data with
real embeddings. Gaussian clusters suit inverted files: real embeddings usually need a larger
``nprobe`` (on both sides) for the same recall.

Each contender builds its index and searches all ``N`` rows for ``k + 1`` neighbours (the
row itself dropped); the time reported is build + search on the same rows and threads.
Recall@k is measured against an exact result that tokenloom did not compute: faiss
``IndexFlatIP`` over all rows, or, when ``N > --exact-max``, numpy products for the exact
neighbours of a random sample of ``--sample`` rows (numpy also checks the faiss truth on that
sample). A neighbour counts when it is in the true top ``k`` or ties the ``k``-th similarity
(to 1e-6), so equal similarities do not decide recall. faiss: ``IndexIVFFlat`` (inner
product, ``nlist = 4·√N``, trained by faiss's default rule and on a sample of 32 rows per
list) at several ``nprobe``, and ``IndexHNSWFlat`` (M = 32) at several ``efSearch``. Ratios
are taken at matched recall: for each target (0.90, 0.95, 0.99) the fastest setting of each
side that reaches it. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import faiss
import numpy as np
import numpy.typing as npt
import tokenloom as tl

if TYPE_CHECKING:
    from collections.abc import Callable

Ids = npt.NDArray[np.int64]
Matrix = npt.NDArray[np.float32]


@dataclass
class Run:
    name: str
    build_s: float
    search_s: float
    recall: float

    @property
    def total_s(self) -> float:
        return self.build_s + self.search_s


def make_embeddings(n: int, d: int, clusters: int, seed: int) -> Matrix:
    """Clustered unit vectors standing in for document embeddings."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(d).astype(np.float32)
    common /= np.linalg.norm(common)
    topics = rng.standard_normal((64, d)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    centres = (
        0.5 * common
        + topics[rng.integers(0, 64, clusters)]
        + rng.standard_normal((clusters, d), dtype=np.float32) * (0.3 / math.sqrt(d))
    )
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sizes = rng.lognormal(0.0, 1.0, clusters)
    counts = rng.multinomial(n, sizes / sizes.sum())
    x = np.empty((n, d), dtype=np.float32)
    rank, at = 48, 0
    for c, m in enumerate(counts):
        basis = rng.standard_normal((rank, d), dtype=np.float32) / math.sqrt(d)
        width = math.exp(rng.uniform(math.log(0.6), math.log(1.2)))
        z = rng.standard_normal((m, rank), dtype=np.float32) * (width / math.sqrt(rank))
        noise = rng.standard_normal((m, d), dtype=np.float32) * (0.3 / math.sqrt(d))
        x[at : at + m] = centres[c] + z @ basis + noise
        at += m
    x = x[rng.permutation(n)]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def exact_rows(x: Matrix, rows: Ids, k: int, block: int = 32768) -> Ids:
    """Exact top-``k`` ids (self excluded) of the given rows, by numpy products."""
    q = x[rows]
    best_s = np.full((len(rows), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(rows), k), dtype=np.int64)
    for start in range(0, len(x), block):
        s = q @ x[start : start + block].T
        ids = np.arange(start, start + s.shape[1])
        s[rows[:, None] == ids[None, :]] = -np.inf
        cand_s = np.concatenate([best_s, s], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(ids, s.shape)], axis=1)
        top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s = np.take_along_axis(cand_s, top, axis=1)
        best_i = np.take_along_axis(cand_i, top, axis=1)
    return best_i


@dataclass
class Truth:
    """The exact neighbours of ``rows`` and their ``k``-th similarity."""

    rows: Ids
    ids: Ids
    kth: npt.NDArray[np.float32]


def truth_of(x: Matrix, rows: Ids, ids: Ids) -> Truth:
    kth = np.einsum("id,id->i", x[rows], x[ids[:, -1]])
    return Truth(rows, ids, kth)


def recall(x: Matrix, found: Ids, truth: Truth) -> float:
    """Share of the found neighbours of the truth's rows that are true top-k neighbours or tie
    the k-th similarity (to 1e-6)."""
    k = truth.ids.shape[1]
    hits = 0
    for a in range(0, len(found), 4096):
        got, want = found[a : a + 4096, :k], truth.ids[a : a + 4096]
        listed = (got[:, :, None] == want[:, None, :]).any(axis=2)
        valid = got >= 0
        q = x[truth.rows[a : a + 4096]]
        sims = np.einsum("id,ikd->ik", q, x[np.where(valid, got, 0)])
        ties = valid & (sims >= truth.kth[a : a + 4096, None] - 1e-6)
        hits += int((listed | ties).sum())
    return hits / truth.ids.size


def drop_self(ids: Ids, k: int) -> Ids:
    """faiss results for ``k + 1`` neighbours with each row's own id removed."""
    own = ids == np.arange(len(ids))[:, None]
    keep = ~own
    keep[~own.any(axis=1), k] = False  # self not found: drop the last instead
    return ids[keep].reshape(len(ids), k)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def search_all(index: faiss.Index, x: Matrix, k: int, queries: Ids | None) -> tuple[float, Ids]:
    """Seconds to search every row (extrapolated from ``queries`` when given) and the ids found
    for those rows (the others left at -1)."""
    if queries is None:
        t, (_, ids) = timed(lambda: index.search(x, k + 1))
        return t, drop_self(ids, k)
    t, (_, found) = timed(lambda: index.search(x[queries], k + 1))
    ids = np.full((len(x), k), -1, dtype=np.int64)
    for row, q in zip(found, queries, strict=True):
        ids[q] = row[row != q][:k]
    return t * len(x) / len(queries), ids


def faiss_ivf(
    x: Matrix,
    k: int,
    nlist: int,
    nprobes: list[int],
    train: Matrix | None,
    label: str,
    score: Callable[[Ids], float],
    queries: Ids | None,
) -> list[Run]:
    index = faiss.IndexIVFFlat(
        faiss.IndexFlatIP(x.shape[1]), x.shape[1], nlist, faiss.METRIC_INNER_PRODUCT
    )
    t_train, _ = timed(lambda: index.train(x if train is None else train))
    t_add, _ = timed(lambda: index.add(x))
    runs = []
    for nprobe in nprobes:
        index.nprobe = nprobe
        t_search, ids = search_all(index, x, k, queries)
        run = Run(
            f"faiss IVFFlat {label} nlist={nlist} nprobe={nprobe}",
            t_train + t_add,
            t_search,
            score(ids),
        )
        print(run_line(run), flush=True)
        runs.append(run)
        if run.recall >= 0.99:
            break
    return runs


def faiss_hnsw(
    x: Matrix, k: int, efs: list[int], score: Callable[[Ids], float], queries: Ids | None
) -> list[Run]:
    index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    t_build, _ = timed(lambda: index.add(x))
    runs = []
    for ef in efs:
        index.hnsw.efSearch = max(ef, k + 1)
        t_search, ids = search_all(index, x, k, queries)
        run = Run(f"faiss HNSWFlat M=32 efC=40 efSearch={ef}", t_build, t_search, score(ids))
        print(run_line(run), flush=True)
        runs.append(run)
        if run.recall >= 0.99:
            break
    return runs


def run_line(r: Run) -> str:
    return (
        f"  {r.name:<58} build {r.build_s:7.1f} s  search {r.search_s:7.1f} s  "
        f"total {r.total_s:7.1f} s  recall@k {r.recall:.4f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--clusters", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--exact-max", type=int, default=200_000, help="largest N searched exactly")
    ap.add_argument("--sample", type=int, default=2000, help="rows with exact truth beyond that")
    ap.add_argument("--nprobe", default="4,8,16,32,64", help="faiss IVF nprobe values")
    ap.add_argument("--ef", default="16,32,64,128", help="faiss HNSW efSearch values")
    ap.add_argument("--tl-nprobe", default="", help="extra tokenloom nprobe values to try")
    ap.add_argument(
        "--faiss-queries",
        type=int,
        default=0,
        help="faiss searches this many random rows (the recall sample among them) and its time "
        "for all N is extrapolated; 0: all rows",
    )
    ap.add_argument("--skip-hnsw", action="store_true")
    ap.add_argument(
        "--skip-faiss-default-training",
        action="store_true",
        help="train faiss IVF only on the sample (its default trains on up to 256 rows per list)",
    )
    ap.add_argument("--skip-faiss-exact", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))
    faiss.omp_set_num_threads(args.threads)
    n, d, k = args.n, args.d, args.k

    t, x = timed(lambda: make_embeddings(n, d, args.clusters, seed=0))
    print(
        f"data: synthetic stand-in, N={n:,} d={d}, {args.clusters} Gaussian clusters around 64 "
        f"topics, L2-normalised, seed 0 ({t:.0f} s to make); k={k}; {args.threads} threads "
        f"(tokenloom rayon, faiss OpenMP); faiss {faiss.__version__}",
        flush=True,
    )
    sample = np.sort(np.random.default_rng(1).choice(n, min(n, args.sample), replace=False))
    t_truth, sample_truth = timed(lambda: truth_of(x, sample, exact_rows(x, sample, k)))
    print(f"  numpy exact neighbours of {len(sample):,} sampled rows: {t_truth:.1f} s", flush=True)
    tl_runs: list[Run] = []
    faiss_runs: list[Run] = []
    if n <= args.exact_max and not args.skip_faiss_exact:
        flat = faiss.IndexFlatIP(d)
        t_add, _ = timed(lambda: flat.add(x))
        t_flat, (_, flat_ids) = timed(lambda: flat.search(x, k + 1))
        truth = truth_of(x, np.arange(n), drop_self(flat_ids, k))
        agree = recall(x, truth.ids[sample], sample_truth)
        print(f"  truth: faiss IndexFlatIP over all rows; numpy agrees on the sample: {agree:.5f}")
        faiss_runs.append(Run("faiss IndexFlatIP (exact)", t_add, t_flat, 1.0))
        print(run_line(faiss_runs[-1]), flush=True)
    else:
        truth = sample_truth
        print(f"  truth: numpy exact neighbours of the {len(sample):,} sampled rows")
    sims = np.einsum("id,ikd->ik", x[sample_truth.rows], x[sample_truth.ids])
    nn = float(np.mean(sims[:, 0])), float(np.mean(sims[:, k - 1]))
    pairs = np.random.default_rng(2).integers(0, n, (20000, 2))
    rand = float(np.mean(np.einsum("ij,ij->i", x[pairs[:, 0]], x[pairs[:, 1]])))
    print(f"  cosine: random pairs {rand:.3f}, 1st neighbour {nn[0]:.3f}, {k}th {nn[1]:.3f}")

    def score(found: Ids) -> float:
        return recall(x, found[truth.rows], truth)

    rows = truth.rows
    if n <= args.exact_max:
        t_exact, (exact_ids, _) = timed(
            lambda: tl.knn(x, k, exact=True, normalize=False, progress=False)
        )
        tl_runs.append(Run("tokenloom exact", 0.0, t_exact, score(exact_ids)))
        print(run_line(tl_runs[-1]), flush=True)
    for nprobe in [None] + [int(p) for p in args.tl_nprobe.split(",") if p]:
        t_tl, (ids, _) = timed(
            lambda p=nprobe: tl.knn(x, k, nprobe=p, normalize=False, progress=False)
        )
        label = "default" if nprobe is None else f"nprobe={nprobe}"
        tl_runs.append(Run(f"tokenloom approximate ({label})", 0.0, t_tl, score(ids)))
        print(run_line(tl_runs[-1]), flush=True)

    nlist = round(4 * math.sqrt(n))
    nprobes = [int(p) for p in args.nprobe.split(",") if p]
    train = x[np.random.default_rng(3).choice(n, min(n, 32 * nlist), replace=False)]
    queries = None
    if 0 < args.faiss_queries < n:
        extra = np.random.default_rng(4).choice(n, args.faiss_queries, replace=False)
        queries = np.union1d(rows, extra[: args.faiss_queries - len(rows)])
        print(f"  faiss search times: {len(queries):,} random rows searched, scaled to {n:,}")
    if not args.skip_faiss_default_training:
        faiss_runs += faiss_ivf(x, k, nlist, nprobes, None, "(faiss training)", score, queries)
    faiss_runs += faiss_ivf(x, k, nlist, nprobes, train, f"(train {len(train):,})", score, queries)
    if not args.skip_hnsw:
        faiss_runs += faiss_hnsw(x, k, [int(e) for e in args.ef.split(",") if e], score, queries)

    print(f"summary at matched recall (build + search of the full self-kNN graph, recall@{k}):")
    print("| recall at least | tokenloom (fastest setting) | faiss (fastest setting) | ratio |")
    print("| --- | --- | --- | --- |")
    for target in (0.90, 0.95, 0.99):
        mine = [r for r in tl_runs if r.recall >= target]
        theirs = [r for r in faiss_runs if r.recall >= target]
        if not mine or not theirs:
            print(f"| {target:.2f} | {cell(mine)} | {cell(theirs)} | - |")
            continue
        a = min(mine, key=lambda r: r.total_s)
        b = min(theirs, key=lambda r: r.total_s)
        print(f"| {target:.2f} | {cell([a])} | {cell([b])} | {a.total_s / b.total_s:.2f} |")
    return 0


def cell(runs: list[Run]) -> str:
    if not runs:
        return "no setting reached it"
    r = min(runs, key=lambda r: r.total_s)
    return f"{r.name}: {r.total_s:.1f} s, recall {r.recall:.4f}"


if __name__ == "__main__":
    raise SystemExit(main())
