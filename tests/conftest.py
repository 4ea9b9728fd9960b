from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tokenloom as tl
import wiki_corpus
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from stdlib_corpus import train_tokenizer

if TYPE_CHECKING:
    from collections.abc import Iterator

STDLIB = Path(sysconfig.get_paths()["stdlib"])
TEXTS = [p.read_text(encoding="utf-8") for p in sorted(STDLIB.glob("*.py"))[:40]]

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


def run_ranks(worker: Path, nproc: int, *args: str) -> None:
    """Runs ``worker`` on ``nproc`` local ranks (one thread each) and checks they all succeed."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    proc = subprocess.run(
        [*cmd, "--nproc-per-node", str(nproc), str(worker), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="session")
def tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small byte-level BPE trained on stdlib sources (no download)."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer(TEXTS, 600, path)
    return path


def write_jsonl(path: Path, records: list[Any], raw_lines: list[bytes] = ()) -> Path:  # type: ignore[assignment]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records) + b"".join(raw_lines)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    elif path.name.endswith(".zst"):
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path.write_bytes(data)
    return path


def dir_bytes(path: Path) -> dict[str, bytes]:
    """Every file directly in ``path``, by name."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


@pytest.fixture(scope="session")
def wiki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """The Wikipedia vital-articles corpus (see ``wiki_corpus``) and each document's topic."""
    if wiki_corpus.WIKI is None:
        pytest.skip(wiki_corpus.MISSING)
    root = tmp_path_factory.mktemp("wiki") / "wiki"
    return root, wiki_corpus.build(root)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray instance of 2 CPUs for the tests of one module, shut down after them."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
