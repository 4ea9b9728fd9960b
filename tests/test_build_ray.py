"""The Ray engine of a build: the same dataset as the local engine, byte for byte, from a local
Ray instance with 2 CPUs; resumable after a failed run; a clear error without Ray."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import tokenloom as tl
from conftest import TEXTS, dir_bytes, write_jsonl
from tokenizers import Tokenizer
from tokenloom._build import inputs as build_inputs
from tokenloom.cli import main as cli_main

if TYPE_CHECKING:
    from pathlib import Path


def corpus(root: Path, bad_records: bool = True) -> list[str]:
    """Six inputs of every text kind, with two skipped records; relative glob patterns."""
    data = root / "data"
    data.mkdir()
    blank = [{"text": " "}] if bad_records else []
    write_jsonl(data / "a.jsonl", [{"text": t} for t in TEXTS[0:4]] + blank)
    write_jsonl(data / "b.jsonl", [{"text": t} for t in TEXTS[4:7]])
    write_jsonl(data / "c.jsonl.zst", [{"text": t} for t in TEXTS[7:12]])
    not_object = [b"[1, 2]\n"] if bad_records else []
    write_jsonl(data / "d.jsonl.zst", [{"text": t} for t in TEXTS[12:14]], not_object)
    pq.write_table(pa.table({"text": TEXTS[14:30]}), data / "e.parquet", row_group_size=5)
    pq.write_table(pa.table({"text": TEXTS[30:33]}), data / "f.parquet")
    return ["data/*.jsonl", "data/*.zst", "data/*.parquet"]


def build(*args: Any, **kw: Any) -> tl.BuildResult:
    kw.setdefault("progress", False)
    return tl.build(*args, **kw)


def test_ray_build_equals_the_local_build(
    local_ray: None, tmp_path: Path, tokenizer_json: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Relative paths: the Ray workers do not share the driver's working directory.
    monkeypatch.chdir(tmp_path)
    # One task per Parquet row group, so e.parquet is split over four tasks.
    monkeypatch.setattr(build_inputs, "TASK_BYTES", 1)
    inputs = corpus(tmp_path)
    local = build(inputs, "local", tokenizer_json, workers=1)
    remote = build(inputs, "remote", tokenizer_json, engine="ray")
    assert (remote.num_docs, remote.num_tokens, remote.skipped) == (
        local.num_docs,
        local.num_tokens,
        local.skipped,
    )
    assert remote.num_docs == 33
    assert remote.skipped == {"empty": 1, "not an object": 1}
    assert remote.messages == local.messages
    # Manifest, shards and provenance sidecars: identical files.
    assert dir_bytes(tmp_path / "remote") == dir_bytes(tmp_path / "local")
    assert not (tmp_path / "remote" / ".parts").exists()
    a, b = tl.open_dataset(tmp_path / "local"), tl.open_dataset(tmp_path / "remote")
    assert (a.tokenizer, a.eos_id, a.vocab_size, a.dtype) == (
        b.tokenizer,
        b.eos_id,
        b.vocab_size,
        b.dtype,
    )
    assert [a.source(i) for i in range(len(a))] == [b.source(i) for i in range(len(b))]
    assert b.source(0) == ("data/a.jsonl", 0)
    assert b.source(22) == ("data/e.parquet", 8)  # 4 + 3 from .jsonl, 5 + 2 from .zst
    tok = Tokenizer.from_file(str(tokenizer_json))
    eos = tok.token_to_id("<|endoftext|>")
    assert b[22].tolist() == [*tok.encode(TEXTS[22], add_special_tokens=False).ids, eos]
    assert [b[i].tolist() for i in range(len(b))] == [a[i].tolist() for i in range(len(a))]
    b.verify(progress=False)


def test_ray_build_resumes_after_a_failed_task(
    local_ray: None, tmp_path: Path, tokenizer_json: Path
) -> None:
    inputs = [str(tmp_path / p) for p in corpus(tmp_path, bad_records=False)]
    bad = tmp_path / "data" / "d.jsonl.zst"  # the fourth of six tasks
    good = bad.read_bytes()
    write_jsonl(bad, [{"text": t} for t in TEXTS[12:14]], [b"not json\n"])
    with pytest.raises(tl.BuildInputError, match=r"d\.jsonl\.zst: line 3: not valid JSON"):
        build(inputs, tmp_path / "out", tokenizer_json, engine="ray", strict=True)
    parts = tmp_path / "out" / ".parts"
    finished = len(list(parts.glob("*/done.json")))
    # Two CPUs: the failing task started once an earlier one had finished.
    assert 1 <= finished <= 5
    assert not (tmp_path / "out" / "manifest.json").exists()
    bad.write_bytes(good)  # fixed: its task is redone, the finished ones are reused
    resumed = build(inputs, tmp_path / "out", tokenizer_json, engine="ray", strict=True)
    assert resumed.resumed_tasks == finished
    build(inputs, tmp_path / "clean", tokenizer_json, strict=True)
    assert dir_bytes(tmp_path / "out") == dir_bytes(tmp_path / "clean")


def test_cli_engine_ray_joins_the_running_instance(
    local_ray: None, tmp_path: Path, tokenizer_json: Path
) -> None:
    write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in TEXTS[:3]])
    argv = ["tokenloom", "build", str(tmp_path / "c.jsonl"), "-t", str(tokenizer_json), "-q"]
    assert cli_main([*argv, "-o", str(tmp_path / "r"), "--engine", "ray"]) == 0
    assert ray.is_initialized()
    assert cli_main([*argv, "-o", str(tmp_path / "l")]) == 0
    assert dir_bytes(tmp_path / "r") == dir_bytes(tmp_path / "l")


def test_without_ray_the_error_says_what_to_install(
    tmp_path: Path, tokenizer_json: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_jsonl(tmp_path / "c.jsonl", [{"text": "x = 1"}])
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(ImportError, match=r"pip install \"tokenloom\[ray\]\""):
        build([tmp_path / "c.jsonl"], tmp_path / "out", tokenizer_json, engine="ray")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="engine must be"):
        build([tmp_path / "c.jsonl"], tmp_path / "out", tokenizer_json, engine="spark")  # type: ignore[arg-type]
