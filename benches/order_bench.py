"""In-context ordering speed, side by side in one run.

1. Traversal loop: tokenloom's reference-variant traversal (the public script's rules) and
   the paper traversal, against a faithful pure-Python re-implementation of the public
   script's sort loop and merge (swj0419/in-context-pretraining ``sort/sort.py``, described in
   ../shared/research/algorithms.md §1.2; written here from that description), on the same
   ``[N, k]`` kNN matrix.
2. ``tokenloom.order`` end to end from that kNN matrix (validation, dedup, the undirected
   graph for the paper variant, traversal, report, order file).
3. Optionally (``--pipeline``) the whole built-in pipeline on a synthetic corpus of N
   documents: embed token ids, kNN graph, dedup, traversal; with ``--ray`` also
   ``engine="ray"`` on the same corpus, on a local Ray instance of all CPUs started before
   the timing (on one machine it cannot beat the local engine, which uses every core).

The kNN matrix is synthetic: N documents in clusters of ``--cluster`` documents, each
listing k random members of its own cluster with decreasing similarity (a stand-in with the
shape of real kNN output; faiss style, rank 0 being the document itself).

    python benches/order_bench.py --docs 1e6 --k 10 [--repeats 3] [--pipeline [--ray]]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import tokenloom as tl


def synthetic_knn(n: int, k: int, cluster: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = (np.arange(n) // cluster) * cluster
    size = np.minimum(cluster, n - base)
    ids = np.empty((n, k + 1), dtype=np.int64)
    ids[:, 0] = np.arange(n)
    off = rng.integers(1, np.maximum(size, 2)[:, None], size=(n, k))
    ids[:, 1:] = base[:, None] + (np.arange(n)[:, None] - base[:, None] + off) % size[:, None]
    sims = np.sort(rng.uniform(0.3, 0.9, size=(n, k + 1)).astype(np.float32), axis=1)[:, ::-1]
    sims[:, 0] = 1.0
    return ids, np.ascontiguousarray(sims)


def python_reference(knn: list[list[int]], cluster_size: int = 21) -> list[int]:
    """The public script's loop: start from the lowest unseen id (``set.pop``), step to the
    first unseen of ranks 1..9, cut segments at ``cluster_size``; then dissolve segments
    shorter than ``cluster_size`` into the segment of each document's first top-9 neighbour
    in another segment, inserted just before it (left in place when there is none)."""
    unseen = set(range(len(knn)))
    segments: list[list[int]] = []
    doc = unseen.pop()
    cur = [doc]
    while unseen:
        nxt = None
        if len(cur) < cluster_size:
            for j in knn[doc][1:10]:
                if j in unseen:
                    nxt = j
                    break
        if nxt is None:
            segments.append(cur)
            doc = unseen.pop()
            cur = [doc]
        else:
            unseen.remove(nxt)
            cur.append(nxt)
            doc = nxt
    segments.append(cur)
    seg_of = {}
    for s, seg in enumerate(segments):
        for d in seg:
            seg_of[d] = s
    for s, seg in enumerate(segments):
        if len(seg) >= cluster_size:
            continue
        for d in list(seg):
            for j in knn[d][1:10]:
                t = seg_of[j]
                if t != s and segments[t]:
                    target = segments[t]
                    target.insert(target.index(j), d)
                    seg.remove(d)
                    seg_of[d] = t
                    break
    return [d for seg in segments for d in seg]


def write_dataset(root: Path, n: int, doc_len: int, seed: int, topics: int = 0) -> None:
    """N documents of ``doc_len`` tokens; with ``topics``, each drawn from its topic's
    Zipf-like vocabulary slice plus shared common tokens."""
    rng = np.random.default_rng(seed)
    with tl.DatasetWriter(root, "u16", eos_id=0, vocab_size=32000, overwrite=True) as w:
        step = 50_000
        for a in range(0, n, step):
            m = min(step, n - a)
            if topics:
                topic = rng.integers(0, topics, size=m)
                own = 1000 + topic[:, None] * 60 + rng.zipf(1.3, size=(m, doc_len)) % 60
                common = 1 + rng.zipf(1.2, size=(m, doc_len)) % 999
                toks = np.where(rng.random((m, doc_len)) < 0.5, own, common)
            else:
                toks = rng.integers(1, 32000, size=(m, doc_len))
            toks[:, -1] = 0
            w.add_many_flat(toks.astype(np.uint16).ravel(), np.full(m, doc_len))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--docs", type=float, default=1e6)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--cluster", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="runs per step; the fastest counts")
    ap.add_argument("--pipeline", action="store_true", help="also run the built-in pipeline")
    ap.add_argument("--doc-len", type=int, default=200, help="tokens per document (pipeline)")
    ap.add_argument("--ray", action="store_true", help="also the pipeline with engine='ray'")
    args = ap.parse_args()
    n = int(args.docs)
    ids, sims = synthetic_knn(n, args.k, args.cluster, args.seed)
    print(f"kNN matrix: {n:,} documents x {args.k} neighbours (+ self), clusters of {args.cluster}")

    knn_lists = ids.tolist()
    t_py = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        py_order = python_reference(knn_lists)
        t_py = min(t_py, time.perf_counter() - t0)
    assert sorted(py_order) == list(range(n))
    del knn_lists

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        write_dataset(root, n, 8, args.seed)
        np.save(Path(tmp) / "knn.npy", ids)
        np.save(Path(tmp) / "sims.npy", sims)
        runs = {}
        for variant in ("reference", "paper"):
            best: tuple[dict, float] | None = None
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                r = tl.order(
                    root,
                    seq_len=2048,
                    knn=Path(tmp) / "knn.npy",
                    knn_similarities=Path(tmp) / "sims.npy",
                    drop_self=True,
                    dedup=0.95,
                    variant=variant,
                    progress=False,
                )
                total = time.perf_counter() - t0
                if best is None or total < best[1]:
                    best = (r, total)
            assert best is not None
            runs[variant] = best
            print(variant, {k: round(v, 3) for k, v in best[0]["seconds"].items()})
            if variant == "reference":
                # The baseline must compute what it stands for: the reference variant's order.
                ours = tl.order_report(root, "iclm")["docs_in_order"]
                same = np.array_equal(ours, np.asarray(py_order))
                print(f"Python baseline order == tokenloom reference variant order: {same}")
                if not same:
                    raise SystemExit("the Python baseline and the reference variant disagree")
        print()
        print(f"fastest of {args.repeats} runs per step")
        print("| step | seconds | speed-up vs Python loop |")
        print("|---|---|---|")
        print(f"| Python re-implementation of the public loop + merge | {t_py:.2f} | 1.0x |")
        for variant, (r, total) in runs.items():
            loop = r["seconds"]["traverse"]
            print(f"| tokenloom traversal loop, {variant} | {loop:.3f} | {t_py / loop:.0f}x |")
            step = f"tokenloom.order end to end from .npy, {variant}"
            print(f"| {step} | {total:.2f} | {t_py / total:.1f}x |")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\npeak RSS of this process so far: {rss:.0f} MiB")

        if args.pipeline:
            root = Path(tmp) / "corpus"
            t0 = time.perf_counter()
            write_dataset(root, n, args.doc_len, args.seed, topics=max(10, n // 2000))
            print(
                f"\nsynthetic topical corpus: {n:,} docs x {args.doc_len} tokens, written in "
                f"{time.perf_counter() - t0:.1f}s"
            )
            t0 = time.perf_counter()
            r = tl.order(root, seq_len=2048, k=args.k, progress=True)
            total = time.perf_counter() - t0
            secs = ", ".join(f"{k} {v:.1f}s" for k, v in r["seconds"].items())
            ordered = r["ordered_pairs"]["mean_similarity"]
            random = r["random_pairs"]["mean_similarity"]
            print(
                f"built-in pipeline: {total:.1f}s end to end ({secs}); adjacent similarity "
                f"{ordered:.3f} vs {random:.3f} at random"
            )
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"peak RSS: {rss:.0f} MiB")
            if args.ray:
                pipeline_on_ray(root, args.k, ordered)


def pipeline_on_ray(root: Path, k: int, local_similarity: float) -> None:
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        r = tl.order(root, seq_len=2048, k=k, engine="ray", name="ray", progress=True)
        total = time.perf_counter() - t0
    finally:
        ray.shutdown()
    secs = ", ".join(f"{k} {v:.1f}s" for k, v in r["seconds"].items())
    ordered = r["ordered_pairs"]["mean_similarity"]
    s = tl.order_report(root, "ray")["settings"]
    print(
        f"engine='ray', {s['partitions']} parts, {s['groups']} groups of {s['nlist']} lists "
        f"(nprobe {s['nprobe']}): "
        f"{total:.1f}s end to end ({secs}); adjacent similarity {ordered:.3f} "
        f"({ordered / local_similarity:.2f}x the local engine's)"
    )


if __name__ == "__main__":
    main()
