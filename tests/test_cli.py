"""The ``tokenloom`` console script installed with the wheel, end to end."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import tokenloom as tl
from conftest import TEXTS, run_cli, write_jsonl
from tokenloom.cli import main

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


def raw_file(path: Path, docs: list[list[int]], eos: int, dtype: type = np.uint16) -> Path:
    """A headerless nanoGPT-style file: documents each followed by ``eos``."""
    flat = [t for d in docs for t in [*d, eos]]
    np.asarray(flat, dtype=dtype).tofile(path)
    return path


def test_index_then_open_matches_the_documents(tmp_path: Path) -> None:
    docs = [[5, 6, 7], [8], [9, 10]]
    raw = raw_file(tmp_path / "train.bin", docs, eos=1)
    r = run_cli("index", raw, "--dtype", "u16", "--eos", "1")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "train.idx").exists()
    assert "3 documents" in r.stdout
    ds = tl.open_dataset(raw)
    assert [ds[i].tolist() for i in range(len(ds))] == [[*d, 1] for d in docs]


def test_index_llmc_header_is_detected(tmp_path: Path) -> None:
    header = np.zeros(256, dtype=np.int32)
    header[:3] = [20240520, 1, 6]
    body = np.asarray([3, 4, 50256, 7, 8, 50256], dtype=np.uint16)
    raw = tmp_path / "val.bin"
    raw.write_bytes(header.tobytes() + body.tobytes())
    r = run_cli("index", raw, "--eos", "50256")
    assert r.returncode == 0, r.stderr
    ds = tl.open_dataset(raw)
    assert ds.num_tokens == 6
    # llm.c files put the EOS before each document.
    assert [ds[i].tolist() for i in range(len(ds))] == [[3, 4], [50256, 7, 8], [50256]]


def test_index_refuses_to_replace_an_index(tmp_path: Path) -> None:
    raw = raw_file(tmp_path / "a.bin", [[2, 3]], eos=0)
    assert run_cli("index", raw, "--dtype", "u16", "--eos", "0").returncode == 0
    again = run_cli("index", raw, "--dtype", "u16", "--eos", "0")
    assert again.returncode != 0
    assert "--overwrite" in again.stderr
    assert run_cli("index", raw, "--dtype", "u16", "--eos", "0", "--overwrite").returncode == 0


def test_inspect_json_reports_the_dataset(dataset: Path) -> None:
    r = run_cli("inspect", dataset, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    ds = tl.open_dataset(dataset)
    assert info["num_docs"] == len(ds)
    assert info["num_tokens"] == ds.num_tokens
    assert info["num_shards"] == ds.num_shards
    assert info["doc_len"]["max"] == int(ds.doc_lengths().max())


def test_verify_passes_then_fails_on_a_flipped_token(dataset: Path) -> None:
    assert run_cli("verify", dataset).returncode == 0
    shard = sorted(dataset.glob("part-*.bin"))[0]
    data = bytearray(shard.read_bytes())
    data[3] ^= 0x40
    shard.write_bytes(bytes(data))
    r = run_cli("verify", dataset)
    assert r.returncode == 1
    assert shard.name in r.stderr
    assert "checksum" in r.stderr.lower()


def test_verify_checks_the_provenance_of_a_built_dataset(
    tmp_path: Path, tokenizer_json: Path
) -> None:
    write_jsonl(tmp_path / "c.jsonl", [{"text": t} for t in TEXTS[:12]])
    out = tmp_path / "ds"
    tl.build([tmp_path / "c.jsonl"], out, tokenizer_json, progress=False, shard_bytes=4096)
    ds = tl.open_dataset(out)
    assert ds.num_shards > 1
    assert ds.verify(progress=False)["sources"] == ds.num_shards
    r = run_cli("verify", out)
    assert r.returncode == 0, r.stderr
    assert f"provenance of {ds.num_shards} shards" in r.stdout
    src = sorted(out.glob("part-*.src"))[-1]
    data = src.read_bytes()
    src.write_bytes(data[:-8])  # cut short: the last row is read as the checksum
    r = run_cli("verify", out)
    assert r.returncode == 1
    assert src.name in r.stderr
    assert f"checksum mismatch at byte {len(data) - 16}" in r.stderr
    assert "rebuild the dataset" in r.stderr
    src.unlink()
    r = run_cli("verify", out)
    assert r.returncode == 1
    assert "is missing" in r.stderr
    for p in out.glob("part-*.src"):
        p.unlink()
    assert run_cli("verify", out).returncode == 0


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    assert run_cli("index").returncode == 2
    assert run_cli("frobnicate").returncode == 2
    r = run_cli("inspect", tmp_path / "missing")
    assert r.returncode != 0
    assert "missing" in r.stderr


def test_main_returns_the_exit_status(dataset: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["tokenloom", "--quiet", "verify", str(dataset)]) == 0
    assert "verified" in capfd.readouterr().out
    assert main(["tokenloom", "inspect", str(dataset / "nope")]) != 0


def test_help_lists_build() -> None:
    r = run_cli("--help")
    assert r.returncode == 0
    assert "\n  build " in r.stdout, r.stdout
    r = run_cli("build", "--help")  # the console script runs build itself
    assert r.returncode == 0
    assert "--token-field" in r.stdout


def test_convert_creates_the_missing_directory_and_keeps_the_metadata(dataset: Path) -> None:
    mega = dataset.parent / "new" / "dir" / "web"
    assert run_cli("convert", dataset, mega, "--to", "megatron").returncode == 0
    back = dataset.parent / "back"
    assert run_cli("convert", mega, back, "--to", "tokenloom").returncode == 0
    a, b = tl.open_dataset(dataset), tl.open_dataset(back)
    assert (b.eos_id, b.vocab_size, b.tokenizer) == (a.eos_id, a.vocab_size, a.tokenizer)
    assert b.eos_id == 0
