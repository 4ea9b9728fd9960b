"""``kill -9`` in the middle of an epoch, then resume from the last checkpoint: the batches of
the interrupted run and of its continuation are exactly those of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tokenloom as tl

WORKER = Path(__file__).with_name("train_worker.py")
EPOCHS = 2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("train") / "ds"
    rng = np.random.default_rng(4)
    with tl.DatasetWriter(path, "u16", eos_id=0, shard_bytes=1024) as w:
        for n in rng.integers(1, 80, size=60):
            w.add(rng.integers(1, 30000, size=int(n)))
    return path


@pytest.fixture(scope="module")
def uninterrupted(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    hashes = resume(corpus, tmp_path_factory.mktemp("whole"))
    assert len(hashes) > 20
    return hashes


def train_until_killed(corpus: Path, run: Path, kill_at: int) -> None:
    """Starts the trainer (in its own process group, with its DataLoader workers) and
    SIGKILLs the whole group once it has logged step ``kill_at`` (or a later one)."""
    with subprocess.Popen(
        [sys.executable, str(WORKER), str(corpus), str(run), str(EPOCHS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:  # (it may run a few steps ahead of this reading)
            if int(line.split()[1]) >= kill_at:
                os.killpg(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "done.json").exists()


def resume(corpus: Path, run: Path) -> list[str]:
    """Runs the trainer to the end in ``run`` (from its checkpoint, if any); the batch hashes."""
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(corpus), str(run), str(EPOCHS)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    hashes: list[str] = json.loads((run / "done.json").read_text())
    return hashes


def test_kill_9_twice_then_resume(corpus: Path, uninterrupted: list[str], tmp_path: Path) -> None:
    """Killed inside the first epoch, resumed and killed again past the epoch boundary (the
    second run starts from the first's checkpoint, a count of batches from a loaded state),
    then resumed to the end."""
    rng = np.random.default_rng(12)
    per_epoch = len(uninterrupted) // EPOCHS
    first = int(rng.integers(2, per_epoch - 1))
    train_until_killed(corpus, tmp_path, first)
    train_until_killed(corpus, tmp_path, per_epoch + 2)
    assert resume(corpus, tmp_path) == uninterrupted


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_killed_repeatedly_at_random_steps(
    corpus: Path, uninterrupted: list[str], tmp_path: Path, seed: int
) -> None:
    """Killed several times, in both epochs and at their boundary, resumed each time."""
    rng = np.random.default_rng(seed)
    per_epoch = len(uninterrupted) // EPOCHS
    stops = sorted({int(s) for s in rng.integers(1, len(uninterrupted) - 1, size=3)} | {per_epoch})
    for stop in stops:
        train_until_killed(corpus, tmp_path, stop)
    assert resume(corpus, tmp_path) == uninterrupted
