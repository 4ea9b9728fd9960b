"""Building datasets from corpora: input kinds, tokenizers, determinism, resumption,
provenance, bad input and tokenizer fingerprints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tokenloom as tl
import zstandard
from conftest import TEXTS, dir_bytes, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models
from tokenloom.cli import main as cli_main


def byte_tok(text: str) -> list[int]:
    """A byte tokenizer: id = byte + 1 (0 is the EOS)."""
    return [b + 1 for b in text.encode("utf-8")]


def other_tok(text: str) -> list[int]:
    return [b + 2 for b in text.encode("utf-8")]


def byte_decode(ids: Any) -> str:
    return bytes(int(i) - 1 for i in ids).decode("utf-8")


def docs_of(path: Path) -> list[list[int]]:
    ds = tl.open_dataset(path)
    return [ds[i].tolist() for i in range(len(ds))]


def build(*args: Any, **kw: Any) -> tl.BuildResult:
    kw.setdefault("progress", False)
    return tl.build(*args, **kw)


def test_jsonl_plain_gz_zst_agree_with_the_tokenizer(tmp_path: Path, tokenizer_json: Path) -> None:
    records = [{"text": t, "id": i} for i, t in enumerate(TEXTS[:6])]
    outs = []
    for ext in ("jsonl", "jsonl.gz", "jsonl.zst"):
        src = write_jsonl(tmp_path / f"c.{ext}", records)
        r = build([src], tmp_path / ext, tokenizer_json)
        assert (r.num_docs, r.num_skipped) == (6, 0)
        outs.append(docs_of(tmp_path / ext))
    assert outs[0] == outs[1] == outs[2]
    tok = Tokenizer.from_file(str(tokenizer_json))
    eos = tok.token_to_id("<|endoftext|>")
    expected = [[*e.ids, eos] for e in tok.encode_batch(TEXTS[:6], add_special_tokens=False)]
    assert outs[0] == expected
    ds = tl.open_dataset(tmp_path / "jsonl")
    assert ds.dtype == "uint16"
    assert ds.eos_id == eos
    assert ds.vocab_size == tok.get_vocab_size()
    assert ds.tokenizer is not None
    assert ds.tokenizer.startswith("tokenizers:sha256:")
    assert ds.source(4) == (str(tmp_path / "c.jsonl"), 4)
    assert not (tmp_path / "jsonl" / ".parts").exists()


def test_globs_are_sorted_and_parquet_row_groups_keep_order(
    tmp_path: Path, tokenizer_json: Path
) -> None:
    tok = Tokenizer.from_file(str(tokenizer_json))
    texts = [f"def f{i}(x):\n    return x * {i}\n" for i in range(50)]
    table = pa.table({"text": texts, "other": list(range(50))})
    pq.write_table(table, tmp_path / "b.parquet", row_group_size=7)
    write_jsonl(tmp_path / "a.jsonl", [{"text": "first"}])
    r = build([tmp_path / "*.parquet", tmp_path / "*.jsonl"], tmp_path / "out", tok, workers=2)
    assert r.num_docs == 51
    ds = tl.open_dataset(tmp_path / "out")
    eos = tok.token_to_id("<|endoftext|>")
    assert ds[0].tolist() == [*tok.encode(texts[0], add_special_tokens=False).ids, eos]
    assert ds.source(0) == (str(tmp_path / "b.parquet"), 0)
    assert ds.source(49) == (str(tmp_path / "b.parquet"), 49)
    assert ds.source(50) == (str(tmp_path / "a.jsonl"), 0)


def test_token_inputs_parquet_and_npy(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"ids": [[1, 2, 3], [4], [], [5, 6]]}), tmp_path / "t.parquet", row_group_size=2
    )
    np.save(tmp_path / "one.npy", np.array([7, 8, 9], dtype=np.int32))
    np.save(tmp_path / "two.npy", np.array([[10, 11], [12, 13]], dtype=np.uint16))
    r = build(
        [tmp_path / "t.parquet", tmp_path / "one.npy", tmp_path / "two.npy"],
        tmp_path / "out",
        token_field="ids",
        vocab_size=100,
        eos_id=0,
    )
    assert docs_of(tmp_path / "out") == [
        [1, 2, 3, 0], [4, 0], [5, 6, 0], [7, 8, 9, 0], [10, 11, 0], [12, 13, 0],
    ]  # fmt: skip
    assert r.skipped == {"empty": 1}
    assert "t.parquet: row 2: empty document" in r.messages[0]
    ds = tl.open_dataset(tmp_path / "out")
    assert ds.tokenizer is None
    assert ds.source(2) == (str(tmp_path / "t.parquet"), 3)
    assert ds.source(5) == (str(tmp_path / "two.npy"), 1)


def test_progress_false_prints_nothing_and_quiet_is_deprecated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "one.npy", np.array([7, 8, 9], dtype=np.int32))
    kw = {"vocab_size": 100, "eos_id": 0, "overwrite": True}
    tl.build(tmp_path / "one.npy", tmp_path / "out", progress=False, **kw)  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""
    tl.build(tmp_path / "one.npy", tmp_path / "out", **kw)  # type: ignore[arg-type]
    assert "documents" in capsys.readouterr().err  # the summary
    with pytest.warns(DeprecationWarning, match="progress=False"):
        tl.build(tmp_path / "one.npy", tmp_path / "out", quiet=True, **kw)  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""
    assert docs_of(tmp_path / "out") == [[7, 8, 9, 0]]


def test_callable_tokenizer_and_u32(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": "héllo"}, {"text": "x"}])
    with pytest.raises(ValueError, match="vocab_size"):
        build([src], tmp_path / "o", byte_tok)
    with pytest.raises(ValueError, match="eos_id"):
        build([src], tmp_path / "o", byte_tok, vocab_size=257)
    build([src], tmp_path / "a", byte_tok, vocab_size=257, eos_id=0)
    ds = tl.open_dataset(tmp_path / "a")
    assert byte_decode(ds[0][:-1]) == "héllo"
    assert ds.tokenizer is not None
    assert "byte_tok" in ds.tokenizer
    build([src], tmp_path / "b", byte_tok, vocab_size=70_000, eos_id=0)
    assert tl.open_dataset(tmp_path / "b").dtype == "uint32"


def test_eos_is_required_when_the_tokenizer_has_none(tmp_path: Path) -> None:
    tok = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": "a"}])
    with pytest.raises(ValueError, match="eos_id"):
        build([src], tmp_path / "o", tok)
    build([src], tmp_path / "o", tok, eos_id=1)
    assert docs_of(tmp_path / "o") == [[0, 1]]


def test_workers_do_not_change_the_bytes(tmp_path: Path, tokenizer_json: Path) -> None:
    for k in range(4):
        write_jsonl(tmp_path / f"in{k}.jsonl.zst", [{"text": t} for t in TEXTS[k * 5 : k * 5 + 5]])
    pq.write_table(pa.table({"text": TEXTS[20:30]}), tmp_path / "p.parquet", row_group_size=3)
    inputs = [tmp_path / "*.zst", tmp_path / "p.parquet"]
    one = build(inputs, tmp_path / "w1", tokenizer_json, workers=1)
    two = build(inputs, tmp_path / "w2", tokenizer_json, workers=2)
    assert (one.num_docs, one.num_tokens) == (two.num_docs, two.num_tokens) == (30, one.num_tokens)
    assert dir_bytes(tmp_path / "w1") == dir_bytes(tmp_path / "w2")


RESUME_SCRIPT = """
import sys, time
import tokenloom as tl

def slow_tok(text):
    time.sleep(0.02)
    return [b + 1 for b in text.encode()]

if __name__ == "__main__":
    r = tl.build(sys.argv[1], sys.argv[2], slow_tok, vocab_size=257, eos_id=0, progress=False)
    print(r.resumed_tasks)
"""


def test_resume_after_kill_9(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k in range(12):
        write_jsonl(corpus / f"f{k:02d}.jsonl", [{"text": f"doc {k} {j} " * 20} for j in range(10)])
    script = tmp_path / "run_build.py"
    script.write_text(RESUME_SCRIPT)
    pattern = str(corpus / "*.jsonl")

    def run(out: Path) -> str:
        done = subprocess.run(
            [sys.executable, str(script), pattern, str(out)],
            capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
        return done.stdout.strip()

    assert run(tmp_path / "clean") == "0"
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), pattern, str(out)])
    deadline = time.monotonic() + 60
    while len(list((out / ".parts").glob("*/done.json"))) < 3:
        assert proc.poll() is None, "build ended before the kill"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.json").exists()
    resumed = int(run(out))
    assert 3 <= resumed < 12
    assert dir_bytes(out) == dir_bytes(tmp_path / "clean")
    assert not (out / ".parts").exists()


class Interrupt:
    """A tokenizer that raises KeyboardInterrupt on one text, once."""

    def __init__(self, trigger: str) -> None:
        self.trigger = trigger
        self.armed = True
        self.__qualname__ = "Interrupt"

    def __call__(self, text: str) -> list[int]:
        if self.armed and text == self.trigger:
            self.armed = False
            raise KeyboardInterrupt
        return byte_tok(text)


def test_ctrl_c_keeps_committed_parts(tmp_path: Path) -> None:
    for k in range(3):
        write_jsonl(tmp_path / f"f{k}.jsonl", [{"text": f"file {k}"}])
    tok = Interrupt("file 2")
    with pytest.raises(KeyboardInterrupt):
        build([tmp_path / "*.jsonl"], tmp_path / "out", tok, vocab_size=257, eos_id=0)
    assert len(list((tmp_path / "out" / ".parts").glob("*/done.json"))) == 2
    assert not list((tmp_path / "out" / ".parts").glob("*/.tmp.*"))
    r = build([tmp_path / "*.jsonl"], tmp_path / "out", tok, vocab_size=257, eos_id=0)
    assert r.resumed_tasks == 2
    assert [byte_decode(d[:-1]) for d in docs_of(tmp_path / "out")] == [
        "file 0",
        "file 1",
        "file 2",
    ]


def bad_inputs(tmp: Path) -> dict[str, tuple[Path, str, str]]:
    """name -> (file, skip reason, message fragment)."""
    good = b"".join(json.dumps({"text": f"line {i}"}).encode() + b"\n" for i in range(50_000))
    comp = zstandard.ZstdCompressor().compress(good)
    (tmp / "trunc.jsonl.zst").write_bytes(comp[: len(comp) // 2])
    (tmp / "garbage.jsonl.zst").write_bytes(b"this is not zstd")
    write_jsonl(tmp / "list.jsonl", [{"text": "ok"}, [1, 2]])
    write_jsonl(tmp / "nofield.jsonl", [{"text": "ok"}, {"body": "x"}])
    write_jsonl(tmp / "empty.jsonl", [{"text": "ok"}, {"text": "  "}])
    write_jsonl(tmp / "latin1.jsonl", [{"text": "ok"}], [b'{"text": "caf\xe9"}\n'])
    pq.write_table(pa.table({"body": ["x"]}), tmp / "nocol.parquet")
    return {
        "truncated": (tmp / "trunc.jsonl.zst", "truncated file", "trunc.jsonl.zst: after line"),
        "garbage": (tmp / "garbage.jsonl.zst", "unreadable file", "not valid zstd data"),
        "not object": (
            tmp / "list.jsonl",
            "not an object",
            "list.jsonl: line 2: not a JSON object",
        ),
        "no field": (
            tmp / "nofield.jsonl",
            "missing field",
            "nofield.jsonl: line 2: no field 'text'",
        ),
        "empty": (tmp / "empty.jsonl", "empty", "empty.jsonl: line 2: empty document"),
        "utf8": (tmp / "latin1.jsonl", "not UTF-8", "latin1.jsonl: line 2: not valid UTF-8"),
        "no column": (tmp / "nocol.parquet", "missing column", "nocol.parquet: no column 'text'"),
    }


@pytest.mark.parametrize(
    "case", ["truncated", "garbage", "not object", "no field", "empty", "utf8", "no column"]
)
def test_bad_input_is_skipped_with_its_place_or_fails_in_strict_mode(
    tmp_path: Path, case: str
) -> None:
    path, reason, fragment = bad_inputs(tmp_path)[case]
    kw: dict[str, Any] = {"vocab_size": 257, "eos_id": 0}
    r = build([path], tmp_path / "out", byte_tok, **kw)
    assert r.skipped == {reason: 1}
    assert any(fragment in m for m in r.messages), r.messages
    assert fragment in r.summary()
    if case == "truncated":
        assert 0 < r.num_docs < 50_000
        assert [byte_decode(d[:-1]) for d in docs_of(tmp_path / "out")[:2]] == ["line 0", "line 1"]
    with pytest.raises(tl.BuildInputError, match=fragment.split(":")[0]):
        build([path], tmp_path / "strict", byte_tok, strict=True, **kw)
    assert not (tmp_path / "strict" / "manifest.json").exists()


def test_missing_inputs_and_unknown_kinds(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no file matches"):
        build([tmp_path / "*.jsonl"], tmp_path / "o", byte_tok, vocab_size=257, eos_id=0)
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(ValueError, match=r"x\.csv: unknown input kind"):
        build([tmp_path / "x.csv"], tmp_path / "o", byte_tok, vocab_size=257, eos_id=0)


def test_other_tokenizers_are_refused(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": "abc"}])
    build([src], tmp_path / "a", byte_tok, vocab_size=258, eos_id=0)
    with pytest.raises(tl.BuildInputError, match=r"tokenized with callable:.*byte_tok"):
        build([src], tmp_path / "a", other_tok, vocab_size=258, eos_id=0)
    with pytest.raises(FileExistsError):
        build([src], tmp_path / "a", byte_tok, vocab_size=258, eos_id=0)
    # An unfinished build is only resumed with the same tokenizer.
    (tmp_path / "b" / ".parts").mkdir(parents=True)
    (tmp_path / "b" / ".parts" / "build.json").write_text(
        json.dumps({"tokenizer": "callable:x", "settings": "other"})
    )
    with pytest.raises(tl.BuildInputError, match="unfinished build"):
        build([src], tmp_path / "b", other_tok, vocab_size=258, eos_id=0)
    build([src], tmp_path / "b", other_tok, vocab_size=258, eos_id=0, overwrite=True)
    # Mixing datasets of different tokenizers is refused by the loader.
    with pytest.raises(ValueError, match=r"cannot mix.*tokenizer"):
        tl.TokenDataset([(tmp_path / "a", 0.5), (tmp_path / "b", 0.5)], seq_len=2, batch_size=1)
    tl.TokenDataset([(tmp_path / "a", 0.5), (tmp_path / "a", 0.5)], seq_len=2, batch_size=1)


def test_cli_build(
    tmp_path: Path, tokenizer_json: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jsonl(tmp_path / "c.jsonl", [{"text": "print(1)"}, {"text": ""}])
    argv = ["tokenloom", "build", str(tmp_path / "*.jsonl"), "-o", str(tmp_path / "out")]
    assert cli_main([*argv, "-t", str(tokenizer_json)]) == 0
    err = capsys.readouterr().err
    assert "1 documents" in err
    assert "c.jsonl: line 2: empty document" in err
    assert len(tl.open_dataset(tmp_path / "out")) == 1
    assert cli_main([*argv, "-t", str(tokenizer_json), "--strict", "--overwrite", "-q"]) == 1
    assert "strict mode" in capsys.readouterr().err
    assert cli_main(["tokenloom", "build", "--help"]) == 0
    assert "--workers" in capsys.readouterr().out
    assert cli_main(["tokenloom", "build", "x.jsonl"]) == 2


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=st.lists(
        st.lists(st.one_of(st.text(max_size=30), st.just(""), st.integers()), max_size=8),
        min_size=1,
        max_size=4,
    )
)
def test_any_corpus_round_trips_with_sources(files: list[list[str | int]]) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        expected: list[tuple[str, str, int]] = []
        for k, values in enumerate(files):
            path = tmp / f"f{k}.jsonl"
            records = [{"text": v} for v in values]
            write_jsonl(path, records)
            expected += [
                (v, str(path), row)
                for row, v in enumerate(values)
                if isinstance(v, str) and v.strip()
            ]
        r = build([tmp / "*.jsonl"], tmp / "out", byte_tok, vocab_size=257, eos_id=0)
        ds = tl.open_dataset(tmp / "out")
        got = [(byte_decode(ds[i][:-1]), *ds.source(i)) for i in range(len(ds))]
        assert got == expected
        assert r.num_docs + r.num_skipped == sum(len(v) for v in files)
        assert all(int(ds[i][-1]) == 0 for i in range(len(ds)))


def test_source_needs_a_built_dataset(tmp_path: Path) -> None:
    with tl.DatasetWriter(tmp_path / "ds", eos_id=0, vocab_size=10) as w:
        w.add([1, 2])
    ds = tl.open_dataset(tmp_path / "ds")
    with pytest.raises(ValueError, match="no provenance sidecar"):
        ds.source(0)
    with pytest.raises(IndexError):
        ds.source(5)


def test_merge_refuses_other_tokenizers(tmp_path: Path) -> None:
    for name, tok in (("a", "t1"), ("b", "t2")):
        with tl.DatasetWriter(tmp_path / name, eos_id=0, vocab_size=10, tokenizer=tok) as w:
            w.add([1])
    with pytest.raises(ValueError, match=r"cannot merge.*t1.*t2"):
        tl._core.merge_datasets(tmp_path / "m", [tmp_path / "a", tmp_path / "b"])
    info = tl._core.merge_datasets(tmp_path / "m", [tmp_path / "a", tmp_path / "a"])
    assert info["num_docs"] == 2
    assert os.path.exists(tmp_path / "a" / "manifest.json")
