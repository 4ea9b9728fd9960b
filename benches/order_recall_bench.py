"""Recall of the exact global 10-NN by the staged engine's inverted lists, against nprobe.

Writes N clustered unit vectors as one float16 ``.npy`` shard, and a dataset of N small
documents for them. The vectors are a Gaussian mixture shaped like document embeddings (see
``mixture``): --topics topics of uneven size, each a cloud spread along --local directions
of its own, plus isotropic noise; with the defaults a document's nearest neighbour is at
cosine 0.63 and its 10th at 0.54, and a random pair at 0. For each --nprobe it runs the
staged engine (``engine="disk"``: every step of the Ray engine, in this process; or
``engine="ray"`` on a local Ray instance), keeps the merged kNN lists, and measures recall
on --queries random documents against their exact 10 nearest neighbours over all N vectors,
found by brute force in NumPy (float32 products of the unit rows rounded to float16, the
values the lists hold; nothing of tokenloom's). A neighbour whose exact similarity ties the
10th is counted as found. The interval is a bootstrap 95% over the queries.

    python benches/order_recall_bench.py --docs 1e5 --dir /tmp/recall --nprobe 4,8,16,32,64 \
        [--engine ray --cpus 2]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import tokenloom as tl
from tokenloom import _core, order_ray

SETTINGS = order_ray.staged_settings(1024, 10, dedup=None)


def mixture(
    n: int, d: int, topics: int, local: int, spread: float, noise: float, seed: int
) -> np.ndarray:
    """``n`` unit vectors ``[n, d]`` (float32): ``topics`` topics of uneven size (Dirichlet
    0.7), each a Gaussian cloud of ``local`` dimensions (a random subspace of its own, standard
    deviation ``spread`` per direction) around its centre, plus isotropic noise of total
    norm about ``noise``; then normalised. Real embeddings look like this: clusters of
    uneven size, each spread along few directions, so near neighbours lie on both sides of
    any cut through a cluster."""
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal((topics, d)).astype(np.float32)
    centre /= np.linalg.norm(centre, axis=1, keepdims=True)
    basis = np.linalg.qr(rng.standard_normal((topics, d, local)))[0].astype(np.float32)
    t = rng.choice(topics, size=n, p=rng.dirichlet(np.full(topics, 0.7)))
    out = np.empty((n, d), np.float32)
    for a in range(0, n, 8192):
        b = min(a + 8192, n)
        z = rng.standard_normal((b - a, local)).astype(np.float32) * spread
        x = centre[t[a:b]] + np.einsum("ndl,nl->nd", basis[t[a:b]], z)
        x += rng.standard_normal((b - a, d)).astype(np.float32) * (noise / np.sqrt(d))
        out[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_top(v: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact ``k`` nearest rows of ``v`` (unit rows) to the rows ``q`` of ``v`` (self
    excluded): ids and similarities, best first."""
    qv = v[q]
    best = np.full((len(q), k), -np.inf, np.float32)
    best_id = np.full((len(q), k), -1, np.int64)
    for a in range(0, len(v), 32768):
        sims = qv @ v[a : a + 32768].T
        col = np.arange(a, a + sims.shape[1])
        sims[q[:, None] == col[None, :]] = -np.inf
        cat = np.concatenate([best, sims], axis=1)
        cid = np.concatenate([best_id, np.broadcast_to(col, sims.shape)], axis=1)
        top = np.argpartition(-cat, k - 1, axis=1)[:, :k]
        best, best_id = np.take_along_axis(cat, top, 1), np.take_along_axis(cid, top, 1)
    o = np.argsort(-best, axis=1, kind="stable")
    return np.take_along_axis(best_id, o, 1), np.take_along_axis(best, o, 1)


def recall(
    v: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[float, float, float]:
    """Mean recall@k of the lists ``ids[q]`` against brute force, with a bootstrap 95%
    interval; a listed neighbour at least as similar as the exact k-th counts as found."""
    _, sims = exact_top(v, q, k)
    kth = sims[:, -1]
    got = ids[q]
    got_sims = np.einsum("qd,qkd->qk", v[q], v[np.maximum(got, 0)])
    found = ((got >= 0) & (got_sims >= kth[:, None] - 1e-6)).sum(axis=1)
    per = np.minimum(found, k) / k
    boot = [per[rng.integers(0, len(per), len(per))].mean() for _ in range(1000)]
    return float(per.mean()), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=float, default=1e5)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--topics", type=int, default=300)
    ap.add_argument("--local", type=int, default=32, help="dimensions of a topic's cloud")
    ap.add_argument("--spread", type=float, default=0.25, help="its deviation per direction")
    ap.add_argument("--noise", type=float, default=0.5, help="isotropic noise (norm)")
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--nprobe", default="4,8,16,32,64")
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--engine", choices=("disk", "ray"), default="disk")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n, k = int(args.docs), int(SETTINGS["k"])
    root = args.dir / f"recall-{n}-{args.dim}"
    shutil.rmtree(root, ignore_errors=True)
    with tl.DatasetWriter(root, "u16", eos_id=0, vocab_size=32000) as w:
        w.add_many_flat(np.ones(2 * n, np.uint16), np.full(n, 2))
    v = mixture(n, args.dim, args.topics, args.local, args.spread, args.noise, args.seed)
    shard = root / "vectors.npy"
    np.save(shard, v.astype(np.float16))
    # The values the search compares: the shard's rows at unit length, stored as float16 in
    # the inverted lists (so near-ties at the 10th neighbour are judged on the same numbers).
    v = np.load(shard).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    v = v.astype(np.float16).astype(np.float32)
    rng = np.random.default_rng(args.seed)
    q = np.sort(rng.choice(n, size=min(args.queries, n), replace=False))
    _, s1 = exact_top(v, q[:1000], k)
    rnd = np.einsum("qd,qd->q", v[q[:1000]], v[rng.integers(0, n, 1000)])
    print(
        f"{n:,} vectors of {args.dim} dimensions ({args.topics} topics, clouds of "
        f"{args.local} dimensions, spread {args.spread}, noise {args.noise}): nearest "
        f"neighbour similarity {s1[:, 0].mean():.3f}, 10th "
        f"{s1[:, -1].mean():.3f}, random pair {rnd.mean():.3f}"
    )
    if args.engine == "ray":
        import ray

        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    nlist, default, _ = _core.order_ivf_defaults(n)
    print(f"engine={args.engine!r}, nlist {nlist}, default nprobe {default}")
    print("nprobe  recall@10  95% CI          seconds (whole run)")
    for p in [int(x) for x in args.nprobe.split(",")]:
        t = time.perf_counter()
        order_ray.order_staged(
            root,
            "recall",
            SETTINGS,
            [shard],
            {"embeddings": str(shard)},
            {"dim": args.dim, "max_tokens": 2048, "nprobe": p},
            args.partitions,
            args.engine,
            False,
            keep=True,
        )
        sec = time.perf_counter() - t
        work = root / "orders" / ".recall.work"
        ids, _ = _core.order_read_knn(sorted(work.glob("knn-*.knn")), n, k)
        shutil.rmtree(work)
        r, lo, hi = recall(v, ids, q, k, rng)
        print(f"{min(p, nlist):6}  {r:9.4f}  [{lo:.4f}, {hi:.4f}]  {sec:8.1f}")
    if args.engine == "ray":
        ray.shutdown()


if __name__ == "__main__":
    main()
