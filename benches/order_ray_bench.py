"""In-context ordering on Ray against the single-process order, on a real corpus, in one run.

Builds the Wikipedia vital-articles corpus (tests/wiki_corpus.py: 9,033 lead sections, 11
topics, no download), then orders it with the built-in embeddings once with
``engine="local"`` and once with ``engine="ray"`` on a local Ray instance (started before the
timing, so its start-up is not counted), and prints for each: the mean similarity of adjacent
documents inside contexts, its ratio to a random order of the same documents, how often
adjacent documents share their Wikipedia topic, and the wall time.

    python benches/order_ray_bench.py [--cpus 2] [--partitions P] [--k 10] [--seq-len 1024]

On one machine Ray cannot be faster than the local engine, which already uses every core:
the Ray engine is for corpora whose kNN graph does not fit one machine's time or memory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import tokenloom as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import wiki_corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    ap.add_argument("--partitions", type=int, default=None, help="default: 4 per CPU")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--variant", default="paper", choices=("paper", "reference"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "wiki"
        topics = wiki_corpus.build(root)
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        try:
            rows = []
            for engine in ("local", "ray"):
                kw = {"partitions": args.partitions} if engine == "ray" else {}
                t = time.perf_counter()
                r = tl.order(
                    root,
                    seq_len=args.seq_len,
                    k=args.k,
                    variant=args.variant,
                    name=engine,
                    engine=engine,
                    progress=False,
                    **kw,
                )
                took = time.perf_counter() - t
                rep = tl.order_report(root, engine)
                docs = np.asarray(rep["docs_in_order"], np.int64)
                agree = float(np.mean(topics[docs[1:]] == topics[docs[:-1]]))
                parts = rep["settings"].get("partitions", 1)
                rows.append((engine, parts, r, agree, took))
        finally:
            ray.shutdown()
    chance = sum((np.sum(topics == t) / len(topics)) ** 2 for t in set(topics))
    print(f"{len(topics)} documents, k={args.k}, seq_len={args.seq_len}, {args.cpus} CPUs")
    print("engine  parts  adjacent sim  random sim  ratio  same topic  dups  segments  seconds")
    for engine, parts, r, agree, took in rows:
        print(
            f"{engine:6} {parts:6} {r['ordered_pairs']['mean_similarity']:13.4f}"
            f" {r['random_pairs']['mean_similarity']:11.4f} {r['similarity_ratio']:6.2f}"
            f" {agree:11.3f} {r['duplicates']:5} {r['segments']:9} {took:8.2f}"
        )
    local, remote = rows[0][2], rows[1][2]
    share = remote["ordered_pairs"]["mean_similarity"] / local["ordered_pairs"]["mean_similarity"]
    print(f"ray / local adjacent similarity: {share:.3f}; topic agreement by chance {chance:.3f}")


if __name__ == "__main__":
    main()
