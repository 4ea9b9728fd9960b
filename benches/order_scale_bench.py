"""The staged ordering engine at scale, in one run: time and peak memory per stage, the bytes
that pass through Ray, recall of the exact 10-NN, adjacent similarity against the local
(in-memory) engine, and one global walk against a stitch of per-group paths.

The corpus is synthetic (no real corpus of this size is available offline): N documents of
--doc-len tokens, each a mixture of 3 of 300 topics (Dirichlet(0.5) weights; 30% of the
tokens from a shared Zipf vocabulary, the rest from the topics' own Zipf vocabularies of 100
tokens). Documents of one topic each (``benches/order_bench.py``'s generator) are too easy:
there the inverted lists find every exact neighbour with a single probe; mixtures put a
document's neighbours in lists around several centroids, as real text does.

    python benches/order_scale_bench.py --docs 1e6 --dir /tmp/scale --engine ray --cpus 2 \
        --local --stitch
    python benches/order_scale_bench.py --docs 1e7 --dir /tmp/scale --engine disk

``--engine disk`` runs every step in this process (peak RSS per stage is this process's);
``--engine ray`` runs them as tasks of a local Ray instance of --cpus CPUs (started before
the timing; peak RSS per stage is the largest worker's, the driver's given apart). Recall is
measured on --queries random documents against their exact 10 nearest neighbours over all N
float16 vectors (numpy, in blocks), with a bootstrap 95% interval over the queries. With
--local the in-memory engine orders the same corpus (same seed) for the similarity ratio.
With --stitch the merged lists are also walked with every edge between groups cut (each group
walked on its own, the paths laid one after another in chain order: what a stitch of
per-group paths can reach at best) against the global walk, over --seeds walk seeds, compared
by a paired bootstrap over documents (the similarity of each document to its successor).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import tokenloom as tl
from tokenloom import _core, order_ray

TOPICS, PER_TOPIC, MIX, COMMON = 300, 100, 3, 0.3


def write_mixtures(root: Path, n: int, doc_len: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with tl.DatasetWriter(root, "u16", eos_id=0, vocab_size=32000, overwrite=True) as w:
        for a in range(0, n, 50_000):
            m = min(50_000, n - a)
            topic = rng.integers(0, TOPICS, size=(m, MIX))
            weight = rng.dirichlet([0.5] * MIX, size=m)
            pick = (rng.random((m, doc_len))[:, :, None] > np.cumsum(weight, 1)[:, None, :-1]).sum(
                -1
            )
            own = 1000 + np.take_along_axis(topic, pick, 1) * PER_TOPIC
            own += rng.zipf(1.3, size=(m, doc_len)) % PER_TOPIC
            common = 1 + rng.zipf(1.2, size=(m, doc_len)) % 999
            toks = np.where(rng.random((m, doc_len)) < COMMON, common, own)
            toks[:, -1] = 0
            w.add_many_flat(toks.astype(np.uint16).ravel(), np.full(m, doc_len))


class Sampler:
    """Samples the resident memory of this process and of Ray's workers every 0.2 s: all of
    it (RSS), and its anonymous part (RSS less the mapped file pages, which the kernel can drop
    and read again)."""

    def __init__(self) -> None:
        # (time, own RSS, largest worker RSS, own anonymous, largest worker anonymous)
        self.samples: list[tuple[float, int, int, int, int]] = []
        self.stop = threading.Event()
        self.me = psutil.Process()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            worker = worker_anon = 0
            for p in psutil.process_iter(["cmdline", "memory_info"]):
                cmd, m = p.info["cmdline"] or [], p.info["memory_info"]
                if cmd and cmd[0].startswith("ray::") and m is not None:
                    worker = max(worker, m.rss)
                    worker_anon = max(worker_anon, m.rss - m.shared)
            m = self.me.memory_info()
            self.samples.append((time.perf_counter(), m.rss, worker, m.rss - m.shared, worker_anon))

    def peak(self, a: float, b: float) -> tuple[int, int, int, int]:
        inside = [s for s in self.samples if a <= s[0] <= b] or [(0.0, 0, 0, 0, 0)]
        return (
            max(s[1] for s in inside),
            max(s[2] for s in inside),
            max(s[3] for s in inside),
            max(s[4] for s in inside),
        )


def instrument(log: list[dict[str, Any]]) -> None:
    """Records each step's window and the pickled size of its tasks' arguments and results."""
    run = order_ray._Steps._run

    def timed(self: Any, step: str, calls: dict[int, Any], take: Any) -> None:
        start = time.perf_counter()
        back = 0

        def counted(p: int, r: Any) -> None:
            nonlocal back
            back += len(pickle.dumps(r))
            take(p, r)

        run(self, step, calls, counted)
        # Arrays the engine puts into the object store once per step count once.
        big = {
            id(a): a
            for c in calls.values()
            for a in c[1:]
            if isinstance(a, np.ndarray) and a.nbytes >= order_ray.BROADCAST_BYTES
        }
        sent = sum(a.nbytes for a in big.values()) + sum(
            len(pickle.dumps([a for a in c[1:] if id(a) not in big])) for c in calls.values()
        )
        log.append(
            {
                "step": step,
                "start": start,
                "end": time.perf_counter(),
                "tasks": len(calls),
                "sent": sent,
                "back": back,
            }
        )

    order_ray._Steps._run = timed  # type: ignore[method-assign]


def exact_recall(
    work: Path, n: int, k: int, queries: int, rng: np.random.Generator
) -> tuple[float, float, float]:
    ids, _ = _core.order_read_knn(sorted(work.glob("knn-*.knn")), n, k)
    shards = [np.load(s, mmap_mode="r") for s in sorted(work.glob("vectors-*.npy"))]
    starts = np.cumsum([0] + [len(v) for v in shards])
    q = np.sort(rng.choice(n, size=queries, replace=False))
    at = np.searchsorted(starts, q, "right") - 1
    qv = np.stack([shards[s][i - starts[s]] for i, s in zip(q, at, strict=True)]).astype(np.float32)
    qn = qv / np.maximum(np.linalg.norm(qv, axis=1, keepdims=True), 1e-12)
    best = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_id = np.full((len(q), k), -1, dtype=np.int64)
    for s, v in enumerate(shards):
        for a in range(0, len(v), 50_000):
            block = np.asarray(v[a : a + 50_000], dtype=np.float32)
            norms = np.linalg.norm(block, axis=1)
            block /= np.maximum(norms, 1e-12)[:, None]
            sims = qn @ block.T
            sims[:, norms == 0] = -np.inf
            col = np.arange(starts[s] + a, starts[s] + a + len(block))
            sims[q[:, None] == col[None, :]] = -np.inf
            cat = np.concatenate([best, sims], axis=1)
            cid = np.concatenate([best_id, np.broadcast_to(col, sims.shape)], axis=1)
            top = np.argpartition(-cat, k - 1, axis=1)[:, :k]
            best, best_id = np.take_along_axis(cat, top, 1), np.take_along_axis(cid, top, 1)
    live = np.isfinite(best).all(axis=1) & (qn.any(axis=1))
    per = np.array([np.isin(best_id[r], ids[q[r]]).mean() for r in np.flatnonzero(live)])
    boot = [rng.choice(per, len(per)).mean() for _ in range(1000)]
    return float(per.mean()), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def group_reads(work: Path, meta: dict[str, Any], k: int) -> None:
    """What the kNN tasks read: the groups planned again from the lists' sizes and the
    centroids (the same call as the run's), the rows each holds (its lists and their partners)
    and all of them against N: the traffic from the shared disk the kNN step costs."""
    sizes = sum(
        _core.order_list_counts(p).astype(np.uint64) for p in sorted(work.glob("lists-*.ivl"))
    )
    centroids = np.load(work / "centroids.npy")
    plans = _core.order_plan_groups(
        sizes, centroids, meta["nprobe"], k, meta["partitions"], meta["task_memory"]
    )
    held = []
    for lists, partners in plans:
        read = set(lists).union(*map(set, partners))
        held.append(int(sum(int(sizes[b]) for b in read)))
    n, d = int(sizes.sum()), centroids.shape[1]
    print(
        f"kNN tasks: {len(plans)} groups; rows held by one: median {int(np.median(held)):,}, "
        f"largest {max(held):,} ({max(held) * d * 6 / 2**30:.2f} GiB at 6 bytes a value); "
        f"rows read by all: {sum(held) / n:.2f} x N ({sum(held) * d * 2 / 2**30:.1f} GiB of "
        "float16)"
    )


def successor_similarity(order: np.ndarray, shards: list[np.ndarray], n: int) -> np.ndarray:
    """For each document, its similarity to the next document of ``order`` (NaN at the end
    and for documents not in the order)."""
    starts = np.cumsum([0] + [len(v) for v in shards])

    def rows(idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), shards[0].shape[1]), np.float32)
        for s, v in enumerate(shards):
            m = (idx >= starts[s]) & (idx < starts[s + 1])
            out[m] = v[idx[m] - starts[s]]
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    out = np.full(n, np.nan, np.float32)
    for a in range(0, len(order) - 1, 200_000):
        cur, nxt = order[a : a + 200_000], order[a + 1 : a + 200_001]
        cur = cur[: len(nxt)]
        out[cur] = np.einsum("ij,ij->i", rows(cur), rows(nxt))
    return out


def stitch_experiment(
    root: Path, work: Path, n: int, k: int, seeds: int, rng: np.random.Generator
) -> None:
    files = sorted(work.glob("knn-*.knn"))
    ids, sims = _core.order_read_knn(files, n, k)
    group = np.full(n, -1, np.int64)
    for g, f in enumerate(files):
        gi, _ = _core.order_read_knn([f], n, k)
        group[(gi >= 0).any(axis=1)] = g
    src = np.repeat(np.arange(n), k).reshape(n, k)
    valid = ids >= 0
    cross = valid & (group[np.where(valid, ids, 0)] != group[src])
    print(f"kNN edges between groups: {cross.sum() / valid.sum():.3f} of {valid.sum():,}")
    cut_ids, cut_sims = ids.copy(), sims.copy()
    cut_ids[cross], cut_sims[cross] = -1, 0.0
    shards = [np.load(s, mmap_mode="r") for s in sorted(work.glob("vectors-*.npy"))]
    diffs, means = [], {"global": [], "stitched": []}
    for seed in range(seeds):
        succ = {}
        for name, (i, s) in {"global": (ids, sims), "stitched": (cut_ids, cut_sims)}.items():
            r = tl.order(
                root,
                seq_len=2048,
                k=k,
                knn=i,
                knn_similarities=s,
                name=name,
                seed=seed,
                progress=False,
            )
            docs = np.asarray(tl.order_report(root, name)["docs_in_order"], np.int64)
            # The stitched walk laid group after group, in the groups' chain order.
            if name == "stitched":
                docs = docs[np.argsort(group[docs], kind="stable")]
            succ[name] = successor_similarity(docs, shards, n)
            means[name].append(float(np.nanmean(succ[name])))
            print(
                f"  seed {seed} {name}: {r['segments']:,} segments, mean successor similarity "
                f"{means[name][-1]:.4f}"
            )
        both = ~np.isnan(succ["global"]) & ~np.isnan(succ["stitched"])
        diffs.append(succ["global"][both] - succ["stitched"][both])
    d = np.concatenate(diffs)
    boot = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(500)]
    print(
        f"global - stitched successor similarity: {d.mean():+.5f} (paired bootstrap 95% CI "
        f"{np.percentile(boot, 2.5):+.5f} to {np.percentile(boot, 97.5):+.5f}; "
        f"global {np.mean(means['global']):.4f}, stitched {np.mean(means['stitched']):.4f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=float, default=1e6)
    ap.add_argument("--doc-len", type=int, default=100)
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--engine", choices=("disk", "ray"), default="disk")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    ap.add_argument("--partitions", type=int, default=None)
    ap.add_argument("--nprobe", type=int, default=None)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--local", action="store_true", help="also the in-memory engine")
    ap.add_argument("--stitch", action="store_true", help="global walk against per-group walks")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    n = int(args.docs)
    root = args.dir / f"mix-{n}"
    if not (root / "manifest.json").exists():
        t = time.perf_counter()
        write_mixtures(root, n, args.doc_len, 0)
        print(f"corpus: {n:,} docs x {args.doc_len} tokens in {time.perf_counter() - t:.0f}s")
    settings = order_ray.staged_settings(2048, args.k, dedup=0.95)
    log: list[dict[str, Any]] = []
    instrument(log)
    if args.engine == "ray":
        import ray

        ray.init(
            num_cpus=args.cpus,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=512 * 2**20,
        )
    sampler = Sampler()
    t0 = time.perf_counter()
    rep = order_ray.order_staged(
        root,
        "staged",
        settings,
        None,
        {"embeddings": "builtin"},
        {"dim": 256, "max_tokens": 2048, "nprobe": args.nprobe},
        args.partitions,
        args.engine,
        True,
        keep=True,
    )
    total = time.perf_counter() - t0
    sampler.stop.set()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.engine == "ray":
        ray.shutdown()
    meta = tl.order_report(root, "staged")["settings"]
    print(
        f"engine={args.engine!r}, {n:,} documents, {meta['partitions']} parts, "
        f"{meta['groups']} groups, nlist {meta['nlist']}, nprobe {meta['nprobe']}: "
        f"{total:.0f}s end to end; peak RSS of this process {peak:,.0f} MiB"
    )
    whole = sampler.peak(t0, t0 + total)
    print(
        f"peak RSS sampled over the run: {whole[0] / 2**20:,.0f} MiB here "
        f"({whole[2] / 2**20:,.0f} anonymous), largest task {whole[1] / 2**20:,.0f} MiB "
        f"({whole[3] / 2**20:,.0f} anonymous)"
    )
    print(
        "step                   tasks  seconds  peak RSS (anonymous) MiB: driver / largest task"
        "   sent / returned (MiB)"
    )

    def mib(rss: int, anon: int) -> str:
        return f"{rss / 2**20:6.0f} ({anon / 2**20:5.0f})"

    last = t0
    for e in log:
        if e["start"] - last > 1:  # the driver's own work between steps (centroids, planning)
            own, _, own_anon, _ = sampler.peak(last, e["start"])
            print(f"{'(driver)':22} {'':5} {e['start'] - last:8.0f}  {mib(own, own_anon)}")
        own, worker, own_anon, worker_anon = sampler.peak(e["start"], e["end"])
        print(
            f"{e['step']:22} {e['tasks']:5} {e['end'] - e['start']:8.0f}  {mib(own, own_anon)} / "
            f"{mib(worker, worker_anon)}  {e['sent'] / 2**20:10.2f} / {e['back'] / 2**20:.2f}"
        )
        last = e["end"]
    print(
        "walk step phases:",
        json.dumps({k: round(v, 1) for k, v in rep["seconds"].items() if k.startswith("walk:")}),
    )
    ordered = rep["ordered_pairs"]["mean_similarity"]
    print(
        f"adjacent similarity {ordered:.4f} vs {rep['random_pairs']['mean_similarity']:.4f} at "
        f"random; {rep['segments']:,} segments, {rep['duplicates']:,} near-duplicates"
    )
    work = root / "orders" / ".staged.work"
    sizes = {p.name: p.stat().st_size for p in work.iterdir()}

    def gib(prefix: str) -> float:
        return sum(v for k, v in sizes.items() if k.startswith(prefix)) / 2**30

    print(
        f"work folder {sum(sizes.values()) / 2**30:.2f} GiB: vectors {gib('vectors'):.2f}, "
        f"lists {gib('lists'):.2f}, kNN {gib('knn'):.2f}"
    )
    group_reads(work, meta, args.k)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    r, lo, hi = exact_recall(work, n, args.k, args.queries, rng)
    print(
        f"recall@{args.k} of the exact global neighbours on {args.queries} random documents: "
        f"{r:.4f} (95% CI {lo:.4f}-{hi:.4f}; {time.perf_counter() - t:.0f}s)"
    )
    if args.stitch:
        stitch_experiment(root, work, n, args.k, args.seeds, rng)
    shutil.rmtree(work)
    if args.local:
        t = time.perf_counter()
        loc = tl.order(root, seq_len=2048, k=args.k, name="local", progress=True)
        sim = loc["ordered_pairs"]["mean_similarity"]
        print(
            f"engine='local': {time.perf_counter() - t:.0f}s; adjacent similarity {sim:.4f}; "
            f"staged / local = {ordered / sim:.3f}"
        )
    os.environ.pop("RAY_ADDRESS", None)


if __name__ == "__main__":
    main()
