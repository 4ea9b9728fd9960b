"""The README's Python snippets, run exactly as printed: in order, in one namespace and one
working directory, where the input files they name (a corpus, a tokenizer, embeddings and a
kNN graph) are prepared first. A block right after an ``<!-- illustrative: why -->`` line is
not run; it must say why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tokenloom as tl
from conftest import TEXTS, write_jsonl

if TYPE_CHECKING:
    import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MARK = "<!-- illustrative:"


def python_blocks() -> list[tuple[int, str, str | None]]:
    """(first line, code, why it is not run or None) of each fenced python block."""
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            end = lines.index("```", i + 1)
            above = lines[i - 1].strip()
            why = above[len(MARK) : -len("-->")].strip() if above.startswith(MARK) else None
            blocks.append((i + 2, "\n".join(lines[i + 1 : end]), why))
            i = end
        i += 1
    return blocks


def prepare_inputs(tokenizer_json: Path) -> None:
    """The files the build snippet reads: compressed JSONL, Parquet and a tokenizer."""
    Path("corpus").mkdir()
    Path("more").mkdir()
    for part in range(2):
        texts = TEXTS[part * 20 : part * 20 + 20]
        records = [{"text": t[k : k + 3000]} for t in texts for k in (0, 3000)]
        write_jsonl(Path(f"corpus/part-{part:04d}.jsonl.zst"), records)
    pq.write_table(pa.table({"text": [t[:2000] for t in TEXTS[:5]]}), "more/extra.parquet")
    shutil.copy(tokenizer_json, "tokenizer.json")


def prepare_vectors() -> None:
    """Document embeddings of data/web and their kNN graph as faiss writes it (self first)."""
    n = len(tl.open_dataset("data/web"))
    emb = np.random.default_rng(0).standard_normal((n, 32)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    np.save("emb.npy", emb)
    sims = emb @ emb.T
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :11]
    np.save("I.npy", ids.astype(np.int64))
    np.save("D.npy", np.take_along_axis(sims, ids, axis=1))


def test_illustrative_blocks_say_why() -> None:
    blocks = python_blocks()
    skipped = [why for _, _, why in blocks if why is not None]
    assert all(skipped)
    assert len(blocks) - len(skipped) >= 5


def test_readme_snippets_run_as_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer_json: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    prepare_inputs(tokenizer_json)
    namespace: dict[str, object] = {"__name__": "readme"}
    ran = []
    for line, code, why in python_blocks():
        if why is not None:
            continue
        if "emb.npy" in code and not Path("emb.npy").exists():
            prepare_vectors()
        exec(compile(code, f"{README}:{line}", "exec"), namespace)
        ran.append(line)
    # what the snippets promise, checked on what they left behind
    assert len(tl.open_dataset("data/web")) == 1003
    state = namespace["state"]
    assert json.loads(json.dumps(state)) == state
    assert isinstance(state, dict)
    assert state["position"] == 10 * 8  # the 10 batches the loop received, not 11
    assert Path("iclm.png").read_bytes()[:4] == b"\x89PNG"
    assert len(ran) >= 5
