"""Time to first batch and resident memory as the dataset grows.

    python benches/first_batch.py [--tokens 1e9] [--out bench-out/first]

Writes a synthetic dataset of ``--tokens`` u16 tokens (mean document 1,000 tokens) and a
tenth of it, builds the plans once (they are cached next to the dataset), then in fresh
processes measures the time from constructing ``TokenDataset`` to holding the first
``[8, 2048]`` batch, and the process's peak RSS and anonymous (heap) RSS after 50
shuffled batches, for the ``concat`` and ``pack`` modes. Most of the RSS is PyTorch's own
libraries; mapped token pages count as file-backed RSS (reclaimable page cache).
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tokenloom as tl

ROOT = Path(__file__).resolve().parent.parent
EOS = 50256

PROBE = """
import json, resource, sys, time
t0 = time.perf_counter()
import tokenloom as tl
t1 = time.perf_counter()
ds = tl.TokenDataset(sys.argv[1], seq_len=2048, batch_size=8, mode=sys.argv[2], seed=0)
it = iter(ds)
next(it)
t2 = time.perf_counter()
for _ in range(50):
    next(it)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
anon = int(status["RssAnon"].split()[0]) / 1024
print(json.dumps({"first_batch_ms": (t2 - t1) * 1e3, "import_ms": (t1 - t0) * 1e3, "rss_mb": rss,
                  "anon_mb": anon}))
"""


def build(path: Path, n_tokens: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with tl.DatasetWriter(path, eos_id=EOS, vocab_size=EOS + 1, overwrite=True) as w:
        chunk = 50_000_000
        for start in range(0, n_tokens, chunk):
            n = min(chunk, n_tokens - start)
            tokens = rng.integers(0, EOS, size=n, dtype=np.uint16)
            lengths = rng.geometric(1 / 1000, size=n // 500).astype(np.uint64)
            lengths = lengths[np.cumsum(lengths) <= n]
            lengths = np.append(lengths, np.uint64(n - int(lengths.sum())))
            w.add_many_flat(tokens, lengths)


def probe(path: Path, mode: str) -> dict[str, float]:
    runs = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", PROBE, str(path), mode],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout))
    return {k: min(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tokens", type=float, default=1e9)
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "first")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    big = int(args.tokens)
    sizes = {"small": big // 10, "large": big}
    for name, n in sizes.items():
        t0 = time.perf_counter()
        build(args.out / name, n, seed=1)
        t1 = time.perf_counter()
        for mode in ("concat", "pack"):  # build and cache the plans
            tl.TokenDataset(args.out / name, seq_len=2048, batch_size=8, mode=mode)
        t2 = time.perf_counter()
        print(f"{name}: {n / 1e6:.0f}M tokens written in {t1 - t0:.1f}s, plans in {t2 - t1:.2f}s")
    print(f"{'dataset':>8} {'mode':>7} {'first batch':>12} {'peak RSS':>9} {'anon RSS':>9}")
    for name, n in sizes.items():
        for mode in ("concat", "pack"):
            r = probe(args.out / name, mode)
            print(
                f"{n / 1e6:7.0f}M {mode:>7} {r['first_batch_ms']:9.1f} ms {r['rss_mb']:6.0f} MB"
                f" {r['anon_mb']:6.0f} MB"
                f"   (import tokenloom+torch {r['import_ms']:.0f} ms, not counted)"
            )
    if not args.keep:
        shutil.rmtree(args.out)


if __name__ == "__main__":
    main()
