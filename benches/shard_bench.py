"""Shard benchmarks, side by side with the bare-numpy baseline a user would write instead.

    make bench                       # builds the release binary and the extension first
    python benches/shard_bench.py [--gib 1.0] [--out bench-out]

Measures, in one run, on page-cached files:
  * index scan: `tokenloom index` (standalone binary) vs numpy `flatnonzero(tokens == eos)`;
  * random document access from Python: `ds[i]` vs a bare `np.memmap` slice with the offsets
    already in a numpy array (the nanoGPT/Megatron-style read);
  * writer: `DatasetWriter.add_many` from numpy vs `ndarray.tofile` (no index, no checksum).
Prints throughputs and ratios; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tokenloom as tl

EOS = 50256
ROOT = Path(__file__).resolve().parent.parent


def best_of(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def make_tokens(n: int, mean_doc: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    tokens = rng.integers(0, EOS, size=n, dtype=np.uint16)
    lengths = rng.geometric(1 / mean_doc, size=n // mean_doc * 2).astype(np.uint64)
    lengths = lengths[np.cumsum(lengths) <= n]
    lengths[-1] += n - int(lengths.sum())
    ends = np.cumsum(lengths) - 1
    tokens[ends] = EOS  # nanoGPT style: EOT appended to each document
    return tokens, lengths


def bench_index(out: Path, tokens: np.ndarray) -> None:
    raw = out / "raw.bin"
    tokens.tofile(raw)
    binary = ROOT / "target" / "release" / "tokenloom"
    if not binary.exists():
        sys.exit(
            f"{binary} is missing: run `cargo build --release -p tokenloom-cli` (or make bench)"
        )

    def ours() -> None:
        subprocess.run(
            [binary, "index", raw, "--dtype", "u16", "--eos", str(EOS), "--overwrite", "--quiet"],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def numpy_scan() -> None:
        mm = np.memmap(raw, dtype=np.uint16, mode="r")
        np.flatnonzero(mm == EOS)

    ours()  # warm the page cache
    gb = raw.stat().st_size / 1e9
    t_ours, t_np = best_of(ours), best_of(numpy_scan)
    print(
        f"index scan      tokenloom {gb / t_ours:6.2f} GB/s   numpy {gb / t_np:6.2f} GB/s   "
        f"ratio {t_np / t_ours:5.2f}x   ({gb:.2f} GB, one core, process start included)"
    )


def bench_access(out: Path, tokens: np.ndarray, lengths: np.ndarray, n_reads: int) -> None:
    path = out / "ds"
    one_shard = 2 * tokens.nbytes  # a single shard, so one np.memmap covers the same data
    with tl.DatasetWriter(
        path, eos_id=EOS, vocab_size=EOS + 1, shard_bytes=one_shard, overwrite=True
    ) as w:
        w.add_many_flat(tokens, lengths)
    ds = tl.open_dataset(path)
    mm = np.memmap(next(path.glob("part-*.bin")), dtype=np.uint16, mode="r")
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    idx = np.random.default_rng(1).integers(0, len(ds), size=n_reads).tolist()

    def ours() -> None:
        for i in idx:
            ds[i]

    def memmap() -> None:
        for i in idx:
            mm[offsets[i] : offsets[i + 1]]

    flat = np.frombuffer(mm, dtype=np.uint16)  # the same map as a plain ndarray
    off = offsets.tolist()

    def ndarray() -> None:
        for i in idx:
            flat[off[i] : off[i + 1]]

    t_ours, t_mm, t_nd = best_of(ours), best_of(memmap), best_of(ndarray)
    ns = 1e9 / n_reads
    print(
        f"random ds[i]    tokenloom {t_ours * ns:6.0f} ns   np.memmap slice {t_mm * ns:6.0f} ns   "
        f"plain ndarray slice {t_nd * ns:6.0f} ns\n"
        f"    ratio vs np.memmap {t_ours / t_mm:5.2f}x, vs ndarray {t_ours / t_nd:5.2f}x "
        f"(lower is better; {n_reads} reads over {len(ds)} docs)"
    )


def bench_write(out: Path, tokens: np.ndarray, lengths: np.ndarray) -> None:
    def ours() -> None:
        with tl.DatasetWriter(out / "w", eos_id=EOS, overwrite=True) as w:
            w.add_many_flat(tokens, lengths)

    def tofile() -> None:
        tokens.tofile(out / "w.raw")

    def tofile_fsync() -> None:
        with open(out / "w.raw", "wb") as f:
            tokens.tofile(f)
            f.flush()
            os.fsync(f.fileno())

    mb = tokens.nbytes / 1e6
    t_ours, t_np, t_sync = best_of(ours), best_of(tofile), best_of(tofile_fsync)
    print(
        f"writer          tokenloom {mb / t_ours:6.0f} MB/s   tofile {mb / t_np:6.0f} MB/s   "
        f"tofile+fsync {mb / t_sync:6.0f} MB/s   ratio vs tofile+fsync {t_sync / t_ours:5.2f}x\n"
        "    (ours: index, xxh3 and fsync included; plain tofile stops at the page cache)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0, help="size of the token file (GiB)")
    ap.add_argument("--reads", type=int, default=200_000)
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n = int(args.gib * (1 << 30)) // 2
    tokens, lengths = make_tokens(n, 1000, rng)
    print(
        f"tokenloom {tl.__version__}, {os.cpu_count()} cores, {n / 1e6:.0f}M u16 tokens, "
        f"{len(lengths)} documents"
    )
    bench_index(args.out, tokens)
    bench_access(args.out, tokens, lengths, args.reads)
    bench_write(args.out, tokens, lengths)
    shutil.rmtree(args.out)


if __name__ == "__main__":
    main()
