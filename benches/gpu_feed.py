"""Feeding a GPU: batches from TokenDataset to device memory, with and without overlap.

    python benches/gpu_feed.py [--tokens 2e8] [--workers 4] [--step-ms 5]

On a CUDA machine, writes a synthetic dataset and measures, for ``[8, 2048]`` int64
batches over a number of steps that each spend ``--step-ms`` of GPU time:
  * ``sync``: DataLoader without pinning, ``batch.to(device)`` on the default stream;
  * ``pinned+prefetch``: ``DataLoader(pin_memory=True)`` and ``tl.DevicePrefetcher``, which
    copies the next batch on a side stream while the current step runs.
Reports steps/s, tokens/s and the time per step spent waiting for data. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import tokenloom as tl
import torch
from torch.utils.data import DataLoader

EOS = 50256


def build(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, EOS, size=n, dtype=np.uint16)
    lengths = rng.geometric(1 / 1000, size=n // 500).astype(np.uint64)
    lengths = lengths[np.cumsum(lengths) <= n]
    lengths = np.append(lengths, np.uint64(n - int(lengths.sum())))
    with tl.DatasetWriter(path, eos_id=EOS, overwrite=True) as w:
        w.add_many_flat(tokens, lengths)


def run(batches: object, steps: int, step_cycles: int, prefetch: bool) -> tuple[float, float]:
    dev = torch.device("cuda")
    it = iter(tl.DevicePrefetcher(batches, dev) if prefetch else batches)  # type: ignore[call-overload]
    waited = 0.0
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        w0 = time.perf_counter()
        b = next(it)
        if not prefetch:
            b = {k: v.to(dev) for k, v in b.items()}
        waited += time.perf_counter() - w0
        torch.cuda._sleep(step_cycles)  # the training step's GPU time
        b["input_ids"].sum()
    torch.cuda.synchronize()
    return time.perf_counter() - t0, waited


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tokens", type=float, default=2e8)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--step-ms", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=Path("bench-out/gpu"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    build(args.out, int(args.tokens))
    # calibrate torch.cuda._sleep: cycles per millisecond
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    torch.cuda._sleep(100_000_000)
    torch.cuda.synchronize()
    cycles = int(100_000_000 / ((time.perf_counter() - t0) * 1e3) * args.step_ms)
    print(f"{torch.cuda.get_device_name()}, {args.workers} workers, step {args.step_ms} ms GPU")
    tokens_per_step = 8 * 2048
    configs = [
        (f"{args.workers} workers, sync", args.workers, False, False),
        (f"{args.workers} workers, pinned+prefetch", args.workers, True, True),
        ("in-process, sync", 0, False, False),
        ("in-process, pinned+prefetch", 0, True, True),
    ]
    for name, workers, pin, prefetch in configs:
        ds = tl.TokenDataset(args.out, seq_len=2048, batch_size=8, seed=0, threads=4)

        def make_loader(ds: tl.TokenDataset = ds, w: int = workers, p: bool = pin) -> DataLoader:
            extra = {"prefetch_factor": 4} if w else {}
            return DataLoader(ds, batch_size=None, num_workers=w, pin_memory=p, **extra)

        run(make_loader(), 20, cycles, prefetch)  # warm-up: workers started, pages cached
        ds.set_epoch(0)
        total, waited = run(make_loader(), args.steps, cycles, prefetch)
        print(
            f"{name:>30}: {args.steps / total:7.1f} steps/s  "
            f"{args.steps * tokens_per_step / total / 1e6:7.2f} M tokens/s  "
            f"data wait {waited / args.steps * 1e3:6.2f} ms/step"
        )
    shutil.rmtree(args.out)


if __name__ == "__main__":
    main()
