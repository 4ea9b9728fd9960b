"""Random corruption sweep: seeded byte flips and truncations of the manifest, the indexes, the
token files, the order file and the plan cache. Every case reads the undamaged data (a flip in
token data is caught by ``verify``) or raises a typed error; none crashes, none hangs.

The cases run in a worker process (``corruption_worker.py``), so that a crash (a signal) or a
hang fails the test instead of killing pytest; the worker is restarted after the case."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tokenloom as tl

WORKER = Path(__file__).with_name("corruption_worker.py")
CASE_TIMEOUT = 60  # seconds; a case takes milliseconds


def make_pristine(root: Path) -> Path:
    rng = np.random.default_rng(11)
    ds = root / "ds"
    with tl.DatasetWriter(ds, "u16", eos_id=0, vocab_size=1000, shard_bytes=300) as w:
        for n in rng.integers(0, 50, size=40):
            w.add(rng.integers(1, 1000, size=int(n)))
    order = root / "ds.order"
    docs = rng.permutation(40)[:35].tolist()
    tl.write_order(ds, order, docs, [0, 10, 10, 25, 35])
    # the ordered plan goes to the cache (ds/.plans), which the sweep damages too
    tl.TokenDataset(ds, seq_len=16, batch_size=4, mode="ordered", order=order, output="numpy")
    assert list((ds / ".plans").glob("*.plan"))
    # For truncation while reading: shards of many pages (a cut inside the last page of a
    # one-page file only zeroes its tail), read long enough for a cut to land mid-read.
    tokens = rng.integers(1, 60000, size=4 << 20, dtype=np.uint16)
    with tl.DatasetWriter(
        root / "big", "u16", eos_id=0, vocab_size=60000, shard_bytes=1 << 20
    ) as w:
        w.add_many_flat(tokens, np.full(4096, 1024, dtype=np.uint64))
    return root


def watch(
    proc: subprocess.Popen[str], failures: list[str], outcomes: Counter[str]
) -> tuple[int | None, str]:
    """Follows a worker's report; returns the case it was in when it stopped (None when it
    finished) and its stderr."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    current: int | None = None
    while True:
        try:
            line = lines.get(timeout=CASE_TIMEOUT)
        except queue.Empty:
            proc.kill()
            failures.append(f"case {current}: hang (no answer in {CASE_TIMEOUT} s)")
            break
        if line is None:  # the worker ended
            break
        word, _, rest = line.partition(" ")
        if word == "begin":
            current = int(rest)
        elif word == "end":
            num, _, outcome = rest.partition(" ")
            outcomes[outcome.split(" ")[0]] += 1
            if outcome.startswith("wrong"):
                failures.append(f"case {num}: {outcome}")
            current = None
    proc.wait(timeout=30)
    stderr = proc.stderr.read() if proc.stderr else ""
    return current, stderr


def sweep(tmp_path: Path, seed: int, cases: int, mode: str = "bytes") -> Counter[str]:
    pristine = make_pristine(tmp_path / "pristine")
    work = tmp_path / "work"
    shutil.copytree(pristine, work)
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    i = 0
    while i < cases:
        with subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(pristine),
                str(work),
                str(seed),
                str(i),
                str(cases - i),
                mode,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            current, stderr = watch(proc, failures, outcomes)
        if current is not None:  # the worker died or hung inside a case
            if not failures or not failures[-1].startswith(f"case {current}: hang"):
                failures.append(f"case {current}: crash, status {proc.returncode}: {stderr[-500:]}")
            outcomes["crash or hang"] += 1
            i = current + 1
        else:
            assert proc.returncode == 0, stderr
            i = cases
    print(dict(outcomes), f"{len(failures)} failures", *failures[:20], sep="\n")
    assert not failures, "\n".join(failures[:20])
    assert sum(outcomes.values()) == cases
    return outcomes


def test_corruption_sweep(tmp_path: Path) -> None:
    outcomes = sweep(tmp_path, seed=2024, cases=1000)
    # both ends happen: damage that changes nothing read (a flip in unused bytes is
    # impossible here: every byte is covered by a checksum) and typed errors
    assert outcomes["typed"] > 900, outcomes


def test_hostile_sweep(tmp_path: Path) -> None:
    """Special files, symbolic links, truncation while reading, two writers: a few cases of
    each in the default suite (the long run is below)."""
    outcomes = sweep(tmp_path, seed=5, cases=40, mode="hostile")
    assert outcomes["same"] > 0, outcomes
    assert outcomes["typed"] > 0, outcomes


@pytest.mark.slow
def test_hostile_sweep_long(tmp_path: Path) -> None:
    cases = int(os.environ.get("HOSTILE_CASES", "2000"))
    outcomes = sweep(tmp_path, seed=2025, cases=cases, mode="hostile")
    assert outcomes["same"] > 0, outcomes
    assert outcomes["typed"] > 0, outcomes


@pytest.mark.slow
def test_corruption_sweep_long(tmp_path: Path) -> None:
    outcomes = sweep(tmp_path, seed=7, cases=20_000)
    assert outcomes["typed"] > 18_000, outcomes
