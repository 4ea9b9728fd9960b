"""A shard changed by another program while mapped: a typed error naming the file, never a
SIGBUS. The reading runs in a subprocess, so that a fault fails the test instead of killing
pytest; the subprocess waits on stdin while the test changes the files under it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tokenloom as tl
from conftest import shard_files

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

# Reads batches (or documents) of a dataset: one first, then waits for the test to change
# the files, then the rest. Prints one JSON line: the rows read and the error raised, if any.
READER = """
import json, sys, time
sys.modules["torch"] = None  # numpy output; starts in a third of a second without torch
import tokenloom as tl
path, what = sys.argv[1], sys.argv[2]
rows, err = [], None
def done():
    print(json.dumps({"rows": rows, "error": err}), flush=True)
def record(e):
    global err
    err = {"type": type(e).__name__, "message": str(e), "path": getattr(e, "path", None)}
if what == "loader":
    ds = tl.TokenDataset(path, seq_len=64, batch_size=4, output="numpy", seed=3, threads=1,
                         prefetch=1, outputs=())
    it = iter(ds)
    rows.append(next(it)["input_ids"].tolist())
    print("ready", flush=True); sys.stdin.readline()
    try:
        for b in it:
            rows.append(b["input_ids"].tolist())
    except tl.TokenloomError as e:
        record(e)
else:
    ds = tl.open_dataset(path)
    rows.append(ds[0].tolist())
    print("ready", flush=True); sys.stdin.readline()
    time.sleep(0.01)  # ds[i] trusts a shard checked less than a millisecond ago
    try:
        for i in range(len(ds)):
            rows.append(ds[i].tolist())
        if what == "verify":
            ds.verify(progress=False)
    except tl.TokenloomError as e:
        record(e)
done()
"""


@pytest.fixture
def big(tmp_path: Path) -> Path:
    """Four shards of ~64 KiB (16 pages each), so that a truncation drops whole pages."""
    rng = np.random.default_rng(0)
    with tl.DatasetWriter(tmp_path / "ds", "u16", eos_id=0, shard_bytes=64 << 10) as w:
        for n in rng.integers(50, 400, size=600):
            w.add(rng.integers(1, 60000, size=int(n)))
    assert len(shard_files(tmp_path / "ds", "bin")) >= 4
    return tmp_path / "ds"


def read_while(path: Path, what: str, change: Callable[[], None]) -> dict[str, object]:
    """Runs READER, calls ``change`` once it has read a first batch, returns its report."""
    with subprocess.Popen(
        [sys.executable, "-c", READER, str(path), what],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        change()
        out, err = proc.communicate("go\n", timeout=120)
    assert proc.returncode == 0, f"reader died with status {proc.returncode}: {err[-2000:]}"
    report: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return report


def truncate(path: Path, size: int = 0) -> Callable[[], None]:
    def change() -> None:
        os.truncate(path, size)

    return change


@pytest.mark.parametrize("what", ["loader", "docs", "verify"])
def test_truncated_shard_is_an_error_not_a_fault(big: Path, what: str) -> None:
    bins = shard_files(big, "bin")
    victim = bins[len(bins) // 2]
    report = read_while(big, what, truncate(victim))
    err = report["error"]
    assert isinstance(err, dict), report
    assert err["type"] == "CorruptShardError"
    assert err["path"] == str(victim)
    assert "truncated from" in err["message"]
    assert "reopen the dataset" in err["message"]


def test_truncated_index_is_an_error_not_a_fault(big: Path) -> None:
    idx = shard_files(big, "idx")[-1]
    report = read_while(big, "docs", truncate(idx, 40))
    err = report["error"]
    assert isinstance(err, dict), report
    assert err["type"] == "CorruptShardError"
    assert err["path"] == str(idx)


def test_rewritten_in_place_is_an_error(big: Path) -> None:
    victim = shard_files(big, "bin")[1]

    def scribble() -> None:
        with victim.open("r+b") as f:  # same size, other bytes, a new modification time
            f.write(b"\xff\xff" * 100)

    report = read_while(big, "loader", scribble)
    err = report["error"]
    assert isinstance(err, dict), report
    assert err["type"] == "CorruptShardError"
    assert err["path"] == str(victim)
    assert "changed on disk" in err["message"]


@pytest.mark.parametrize("what", ["loader", "docs"])
def test_replaced_by_rename_keeps_reading_the_opened_data(big: Path, what: str) -> None:
    """A file renamed over a shard leaves the mapped one alive: the data stay the opened ones."""
    reference = read_while(big, what, lambda: None)
    assert reference["error"] is None

    def replace_all() -> None:
        for f in shard_files(big, "bin"):
            tmp = f.with_name(f.name + ".new")
            tmp.write_bytes(b"\x07" * f.stat().st_size)
            tmp.replace(f)

    report = read_while(big, what, replace_all)
    assert report["error"] is None
    assert report["rows"] == reference["rows"]
    # a new opening sees the new files (all tokens 0x0707) and verify rejects them
    assert set(tl.open_dataset(big)[0].tolist()) == {0x0707}
    with pytest.raises(tl.CorruptShardError, match="checksum"):
        tl.open_dataset(big).verify(progress=False)
