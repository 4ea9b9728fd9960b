"""Whole shard bodies or byte ranges: what each read order costs a remote dataset.

The loader's real sample order (``TokenDataset``, ``mode="concat"``: sequential, shuffled, and
shuffled in windows of 16 shards' worth of samples, ``shuffle_window``)
over a dataset written here is replayed against a node cache of a given share of the dataset,
for three ways of fetching:

- ``whole``: the shard bodies a batch reads, whole (what the cache does; a body is evicted
  least recently used first, never one the batch being read needs);
- ``blocks``: the 4 MiB blocks the manifest checksums (``block_xxh3``) a batch reads, cached
  and evicted the same way (the smallest unit a range read could still check on arrival);
- ``ranges``: each sample's own bytes, one request per sample and shard it touches, no cache
  (OLMo-style range reads; nothing is checked on arrival: the manifest has no per-sample sum).

Reported per epoch: bytes transferred as a multiple of the dataset's size, and GET requests.
These are counts, exact for the plan; what they cost in time follows from a store's request
rate and a node's bandwidth (see docs/remote.md for the reading).

Run: .venv/bin/python benches/remote_access.py [--tokens 2.5e8] [--shard-mb 1 4]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import tokenloom as tl

BLOCK = 4 << 20  # the writer's block_bytes
SEQ = 2048
BATCH = 8


def sample_order(path: Path, shuffle: bool, window: int = 0) -> np.ndarray:
    """Sample ids in the order one epoch of the loader reads them."""
    ds = tl.TokenDataset(
        str(path), seq_len=SEQ, batch_size=BATCH, shuffle=shuffle, mode="concat",
        output="numpy", shuffle_window=window,
    )  # fmt: skip
    return np.concatenate([b["sample_ids"] for b in ds])


def replay(
    order: np.ndarray, bounds: np.ndarray, itemsize: int, unit: str, cache_bytes: int
) -> tuple[float, int]:
    """(bytes moved / dataset bytes, GET requests) of one epoch read in `order`."""
    total = int(bounds[-1]) * itemsize
    starts = order.astype(np.int64) * SEQ * itemsize
    ends = starts + (SEQ + 1) * itemsize
    edges = bounds * itemsize  # byte offset of each shard's first token
    if unit == "ranges":
        first = np.searchsorted(edges, starts, side="right") - 1
        last = np.searchsorted(edges, np.minimum(ends, total) - 1, side="right") - 1
        moved = int(np.minimum(ends, total).sum() - starts.sum())
        return moved / total, int((last - first + 1).sum())
    size = {"whole": None, "blocks": BLOCK}[unit]
    cache: OrderedDict[tuple[int, int], int] = OrderedDict()
    held = moved = requests = 0
    for b in range(0, len(order), BATCH):
        need: dict[tuple[int, int], int] = {}
        for s, e in zip(starts[b : b + BATCH].tolist(), ends[b : b + BATCH].tolist(), strict=True):
            e = min(e, total)
            shard = int(np.searchsorted(edges, s, side="right") - 1)
            while s < e:
                lo, hi = int(edges[shard]), int(edges[shard + 1])
                if size is None:
                    need[(shard, 0)] = hi - lo
                else:
                    for k in range((s - lo) // size, (min(e, hi) - 1 - lo) // size + 1):
                        need[(shard, k)] = min(size, hi - lo - k * size)
                s = hi
                shard += 1
        for key, n in need.items():
            if key in cache:
                cache.move_to_end(key)
                continue
            while held + n > cache_bytes:
                old = next((k for k in cache if k not in need), None)
                if old is None:
                    break  # the batch alone fills the cache
                held -= cache.pop(old)
            cache[key] = n
            held += n
            moved += n
            requests += 1
    return moved / total, requests


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=float, default=2.5e8, help="dataset size in u16 tokens")
    ap.add_argument("--shard-mb", type=int, nargs="+", default=[1, 4])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tl-access-"))
    try:
        # The sample order depends on the number of samples and the seed, not on the shard
        # layout: one dataset gives the order, and each shard size is laid over its tokens.
        path = work / "data"
        rng = np.random.default_rng(0)
        n = int(args.tokens)
        with tl.DatasetWriter(path, "u16", eos_id=0, vocab_size=50_000) as w:
            for start in range(0, n, 50_000_000):
                lengths = np.full(min(50_000_000, n - start) // 1000, 1000, dtype=np.uint64)
                w.add_many_flat(
                    rng.integers(1, 50_000, int(lengths.sum()), dtype=np.uint16), lengths
                )
        tokens = tl.open_dataset(path).num_tokens
        fixed = {"sequential": sample_order(path, False), "shuffled": sample_order(path, True)}
        print(
            f"dataset: {tokens * 2 / 2**30:.2f} GiB of u16 tokens; one epoch of batches of "
            f"{BATCH} x {SEQ + 1} tokens (concat)\n"
        )
        print("| shards | order | cache / dataset | fetch | bytes moved / dataset | GET requests |")
        print("|---|---|---|---|---|---|")
        for mb in args.shard_mb:
            per = (mb << 20) // 2
            bounds = np.minimum(np.arange(0, tokens + per, per, dtype=np.int64), tokens)
            bounds = np.unique(bounds)
            # A window of 16 blocks of a shard's samples each (`shuffle_window`).
            window = 16 * (per // SEQ)
            orders = {**fixed, f"windowed ({window:,})": sample_order(path, True, window)}
            for name, order in orders.items():
                for share in (1.0, 0.5, 0.25, 0.125):
                    for unit in ("whole", "blocks", "ranges"):
                        if unit == "ranges" and share != 1.0:
                            continue  # no cache: the same at every share
                        cache = int(tokens * 2 * share)
                        if unit != "ranges" and cache < BATCH * (mb << 20):
                            continue  # a batch may read more shards than the cache holds
                        moved, requests = replay(order, bounds, 2, unit, cache)
                        share_txt = f"{share:g}" if unit != "ranges" else "none"
                        print(
                            f"| {mb} MiB | {name} | {share_txt} | {unit} | {moved:,.2f}x "
                            f"| {requests:,} |",
                            flush=True,
                        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
