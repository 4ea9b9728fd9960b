"""Many processes reading one dataset: the mapped shards are shared page cache, not copies.

Starts N processes (default 8) that each read a whole shuffled epoch of the same dataset
through ``TokenDataset`` at the same time, then, while every process still has the dataset
mapped, reads each one's ``/proc/<pid>/smaps_rollup``: RSS counts every resident page a process
maps (shared ones included), PSS divides each shared page among the processes mapping it. If
pages are shared, PSS summed over the processes is about one copy of the data plus each
process's private memory; were they copies, it would be N copies. Throughput is measured per
process, alone and with all N running, to show that none blocks another (on a machine with
fewer cores than processes they share the cores: the total is what the cores give).

    python benches/shared_pages.py [--mb 256] [--procs 8] [--path DIR]

The processes import tokenloom without torch (numpy output), so that their private memory is
the loader's own.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

KEYS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Shared_Clean", "Private_Clean", "Private_Dirty")
SEQ, BATCH = 2048, 8


def smaps_rollup(pid: int) -> dict[str, int]:
    """Memory counters of ``pid`` in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        if key in KEYS:
            out[key] = int(rest.split()[0]) * 1024
    return out


def make_dataset(path: Path, mb: int) -> None:
    import numpy as np
    import tokenloom as tl

    if (path / "manifest.json").exists():
        ds = tl.open_dataset(path)
        if abs(ds.num_tokens * 2 - mb * 2**20) < 2**20:
            return
    rng = np.random.default_rng(0)
    left = mb * 2**20 // 2
    with tl.DatasetWriter(path, "u16", eos_id=0, shard_bytes=64 << 20, overwrite=True) as w:
        while left > 0:
            n = min(left, 1 << 20)
            lengths = rng.integers(100, 4000, size=n // 1000)
            tokens = rng.integers(1, 50000, size=int(lengths.sum()), dtype=np.uint16)
            w.add(
                [
                    tokens[a:b]
                    for a, b in zip(np.r_[0, lengths.cumsum()[:-1]], lengths.cumsum(), strict=True)
                ]
            )
            left -= int(lengths.sum())


def reader(
    path: str, seed: int, epochs: int, start: Any, measured: Any, done: Any, results: Any
) -> None:
    """One process: waits for the start, reads its epochs, reports, stays mapped until told."""
    sys.modules["torch"] = None  # type: ignore[assignment]
    import tokenloom as tl

    ds = tl.TokenDataset(
        path, seq_len=SEQ, batch_size=BATCH, seed=seed, output="numpy", threads=1, outputs=()
    )
    ds.samples_per_epoch  # noqa: B018  (opened and planned before the clock starts)
    start.wait()
    t0 = time.monotonic()
    tokens = 0
    for _ in range(epochs):
        for b in ds:
            tokens += b["input_ids"].size
    results.put((os.getpid(), seed, tokens, t0, time.monotonic()))
    measured.wait()  # the parent reads our smaps_rollup now, while every process maps the data
    done.wait()


def run(path: Path, procs: int, epochs: int) -> list[dict[str, Any]]:
    ctx = mp.get_context("spawn")
    start, measured, done = ctx.Barrier(procs + 1), ctx.Barrier(procs + 1), ctx.Barrier(procs + 1)
    results = ctx.Queue()
    ps = [
        ctx.Process(target=reader, args=(str(path), s, epochs, start, measured, done, results))
        for s in range(procs)
    ]
    for p in ps:
        p.start()
    start.wait()
    rows = [results.get(timeout=3600) for _ in ps]
    mem = {pid: smaps_rollup(pid) for pid, *_ in rows}
    measured.wait()
    done.wait()
    for p in ps:
        p.join()
    return [
        {"seed": seed, "tokens": tokens, "t0": t0, "t1": t1, "tokens_per_s": tokens / (t1 - t0)}
        | mem[pid]
        for pid, seed, tokens, t0, t1 in sorted(rows, key=lambda r: r[1])
    ]


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def report(title: str, rows: list[dict[str, Any]], data_bytes: int) -> None:
    print(f"\n{title}")
    print("| process | tokens/s | RSS MiB | PSS MiB | PSS file MiB | PSS anon MiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['seed']} | {r['tokens_per_s'] / 1e6:,.1f} M | {mib(r['Rss'])} | {mib(r['Pss'])}"
            f" | {mib(r.get('Pss_File', 0))} | {mib(r.get('Pss_Anon', 0))} |"
        )
    rates = [r["tokens_per_s"] for r in rows]
    wall = max(r["t1"] for r in rows) - min(r["t0"] for r in rows)
    print(
        f"all together {sum(r['tokens'] for r in rows) / wall / 1e6:,.1f} M tokens/s "
        f"(tokens read / wall time); slowest/fastest process "
        f"{min(rates) / max(rates):.2f}; sum of PSS {mib(sum(r['Pss'] for r in rows))} MiB, "
        f"sum of RSS {mib(sum(r['Rss'] for r in rows))} MiB, dataset {mib(data_bytes)} MiB"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=256, help="dataset size in MiB of tokens")
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3, help="epochs each process reads")
    ap.add_argument("--path", type=Path, default=Path("bench-out/shared-pages"))
    args = ap.parse_args()
    make_dataset(args.path, args.mb)
    data = sum(p.stat().st_size for p in args.path.glob("part-*.bin"))
    with open(os.devnull, "w") as null:  # warm the page cache: every reader finds it resident
        for p in sorted(args.path.glob("part-*")):
            null.write(str(len(p.read_bytes())))
    print(f"dataset {args.path}: {mib(data)} MiB of tokens, {os.cpu_count()} cores")
    report("1 process alone", run(args.path, 1, args.epochs), data)
    report(f"{args.procs} processes at once", run(args.path, args.procs, args.epochs), data)


if __name__ == "__main__":
    main()
