from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tokenloom as tl

TOKENLOOM = Path(sys.executable).parent / "tokenloom"


def write_docs(path: Path, docs: list[list[int]], **kw: object) -> Path:
    """Writes ``docs`` as a dataset at ``path`` and returns the path."""
    kw.setdefault("eos_id", 0)
    kw.setdefault("vocab_size", 1000)
    with tl.DatasetWriter(path, **kw) as w:  # type: ignore[arg-type]
        for d in docs:
            w.add(np.asarray(d, dtype=np.int64))
    return path


@pytest.fixture
def docs() -> list[list[int]]:
    rng = np.random.default_rng(0)
    return [rng.integers(1, 1000, size=int(n)).tolist() for n in rng.integers(0, 40, size=25)]


@pytest.fixture
def dataset(tmp_path: Path, docs: list[list[int]]) -> Path:
    """A small dataset of 25 documents in several shards."""
    return write_docs(tmp_path / "ds", docs, shard_bytes=200)


def shard_files(path: Path, ext: str) -> list[Path]:
    return sorted(path.glob(f"part-*.{ext}"))


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Runs the installed ``tokenloom`` command quietly and captures its output."""
    return subprocess.run(
        [str(TOKENLOOM), "--quiet", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
