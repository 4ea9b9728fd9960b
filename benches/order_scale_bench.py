"""The staged ordering engine at scale, in one run: time per stage, peak memory, recall of the
exact 10-NN and adjacent similarity against the local (in-memory) engine, and a projection to
larger corpora from the measured per-document costs.

Builds a synthetic topical corpus of N documents under --dir (benches/order_bench.py's
generator: each document draws half its tokens from its topic's vocabulary slice), then orders
it with ``engine="disk"`` (every step of the Ray engine, run in this process; the work folder
is kept for the measurements and removed at the end). Recall is measured on --queries random
documents against their exact 10 nearest neighbours over all N float16 vectors (numpy, in
blocks). With --local the in-memory engine orders the same corpus for the similarity ratio.

    python benches/order_scale_bench.py --docs 1e6 --dir /tmp/scale [--local] [--queries 2000]
    python benches/order_scale_bench.py --docs 1e7 --dir /tmp/scale --doc-len 100

Peak RSS is the process's own (``ru_maxrss``: its heap plus the pages of mapped files it
touched).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import tokenloom as tl
from tokenloom import _core, order_ray

sys.path.insert(0, str(Path(__file__).resolve().parent))
from order_bench import write_dataset


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=float, default=1e6)
    ap.add_argument("--doc-len", type=int, default=100)
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--partitions", type=int, default=None)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--local", action="store_true", help="also the in-memory engine")
    args = ap.parse_args()
    n = int(args.docs)
    root = args.dir / f"corpus-{n}"
    if not (root / "manifest.json").exists():
        t = time.perf_counter()
        write_dataset(root, n, args.doc_len, 0, topics=max(10, n // 2000))
        print(f"corpus: {n:,} docs x {args.doc_len} tokens in {time.perf_counter() - t:.0f}s")
    settings = {
        "seq_len": 2048,
        "k": args.k,
        "dedup": 0.95,
        "variant": "paper",
        "max_segment": 0,
        "k_traverse": 9,
        "min_segment": 21,
        "seed": 0,
    }
    t = time.perf_counter()
    rep = order_ray.order_staged(
        root,
        "disk",
        settings,
        None,
        {"embeddings": "builtin"},
        {"dim": 256, "max_tokens": 2048},
        args.partitions,
        "disk",
        True,
        keep=True,
    )
    total = time.perf_counter() - t
    print(f"engine='disk': {total:.0f}s end to end, peak RSS {rss_mib():.0f} MiB")
    print(json.dumps({k: round(v, 1) for k, v in rep["seconds"].items()}))
    disk_sim = rep["ordered_pairs"]["mean_similarity"]
    print(
        f"adjacent similarity {disk_sim:.4f} vs {rep['random_pairs']['mean_similarity']:.4f}"
        f" at random; segments {rep['segments']}, duplicates {rep['duplicates']}"
    )
    work = root / "orders" / ".disk.work"
    shards = sorted(work.glob("vectors-*.npy"))
    sizes = {p.name: p.stat().st_size for p in work.iterdir()}
    print(
        f"work folder: {sum(sizes.values()) / 2**30:.2f} GiB "
        f"(vectors {sum(v for k, v in sizes.items() if k.startswith('vectors')) / 2**30:.2f}, "
        f"lists {sum(v for k, v in sizes.items() if k.startswith('lists')) / 2**30:.2f}, "
        f"kNN {sum(v for k, v in sizes.items() if k.startswith('knn')) / 2**30:.2f})"
    )

    ids, _ = _core.order_read_knn(sorted(work.glob("knn-*.knn")), n, args.k)
    vec = [np.load(s, mmap_mode="r") for s in shards]
    rng = np.random.default_rng(0)
    q = np.sort(rng.choice(n, size=args.queries, replace=False))
    allv = np.concatenate([v[:] for v in vec]) if n <= 2_000_000 else None

    def rows(idx: np.ndarray) -> np.ndarray:
        starts = np.cumsum([0] + [len(v) for v in vec])
        out = np.empty((len(idx), vec[0].shape[1]), dtype=np.float32)
        for j, i in enumerate(idx):
            s = np.searchsorted(starts, i, side="right") - 1
            out[j] = vec[s][i - starts[s]]
        return out

    qv = rows(q)
    qn = qv / np.maximum(np.linalg.norm(qv, axis=1, keepdims=True), 1e-12)
    best = np.full((len(q), args.k), -np.inf, dtype=np.float32)
    best_id = np.full((len(q), args.k), -1, dtype=np.int64)
    start = 0
    for v in vec if allv is None else [allv]:
        for a in range(0, len(v), 200_000):
            block = np.asarray(v[a : a + 200_000], dtype=np.float32)
            norms = np.linalg.norm(block, axis=1)
            block /= np.maximum(norms, 1e-12)[:, None]
            s = qn @ block.T
            s[:, norms == 0] = -np.inf
            ids_b = np.arange(start + a, start + a + len(block))
            s[np.isin(q, ids_b)[:, None] & (q[:, None] == ids_b[None, :])] = -np.inf
            cat = np.concatenate([best, s], axis=1)
            cid = np.concatenate([best_id, np.broadcast_to(ids_b, s.shape)], axis=1)
            top = np.argsort(-cat, axis=1, kind="stable")[:, : args.k]
            best = np.take_along_axis(cat, top, axis=1)
            best_id = np.take_along_axis(cid, top, axis=1)
        start += len(v)
    live = np.isfinite(best).all(axis=1)
    found = [np.isin(best_id[r], ids[q[r]]).sum() for r in np.flatnonzero(live)]
    recall = np.sum(found) / (args.k * live.sum())
    per = np.array(found) / args.k
    boot = [rng.choice(per, len(per)).mean() for _ in range(1000)]
    print(
        f"recall@{args.k} of the exact global neighbours on {live.sum()} random documents: "
        f"{recall:.4f} (95% CI {np.percentile(boot, 2.5):.4f}-{np.percentile(boot, 97.5):.4f})"
    )
    shutil.rmtree(work)
    if args.local:
        t = time.perf_counter()
        loc = tl.order(root, seq_len=2048, k=args.k, name="local", progress=True)
        print(
            f"engine='local': {time.perf_counter() - t:.0f}s; adjacent similarity "
            f"{loc['ordered_pairs']['mean_similarity']:.4f}; disk / local = "
            f"{disk_sim / loc['ordered_pairs']['mean_similarity']:.3f}; "
            f"peak RSS so far {rss_mib():.0f} MiB"
        )


if __name__ == "__main__":
    main()
