"""Hostile input and faults: each case once (the corpus of cases is ``hostile.py``). A
build never replaces a dataset it was not told to; a writer never rounds a token; a dataset
rewritten with other boundaries rebuilds its plans and refuses its old orders; two writers of
one target are told of each other; special files and planted links are refused, never
followed; sizes beyond memory are errors, not aborts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import hostile
import numpy as np
import pytest
import tokenloom as tl
from conftest import TOKENLOOM, write_jsonl

if TYPE_CHECKING:
    from pathlib import Path

KW = {"token_field": "ids", "vocab_size": 100, "eos_id": 0, "progress": False, "strict": True}


def docs_of(path: Path) -> list[list[int]]:
    ds = tl.open_dataset(path)
    return [ds[i].tolist() for i in range(len(ds))]


def corpora(tmp: Path) -> tuple[Path, Path, Path]:
    a = write_jsonl(tmp / "a.jsonl", [{"ids": [1, 2, 3]}, {"ids": [4]}])
    b = write_jsonl(tmp / "b.jsonl", [{"ids": [7, 8]}])
    bad = write_jsonl(tmp / "bad.jsonl", [{"ids": [5]}, {"ids": "not ids"}])
    return a, b, bad


# ---------------------------------------------------------------------------------------------
# 1. build never replaces a committed dataset without overwrite


def test_a_failed_overwrite_build_does_not_license_the_next_build(tmp_path: Path) -> None:
    a, b, bad = corpora(tmp_path)
    out = tmp_path / "out"
    tl.build([a], out, **KW)
    want = docs_of(out)
    with pytest.raises(tl.BuildInputError):
        tl.build([b, bad], out, overwrite=True, **KW)
    assert (out / ".parts" / "build.json").exists()
    # Other inputs, no overwrite: refused, naming what differs; the dataset is untouched.
    with pytest.raises(tl.BuildInputError, match="other input files"):
        tl.build([b], out, **KW)
    # The same inputs, no overwrite: a resume, but it would replace the dataset.
    with pytest.raises(FileExistsError, match="pass overwrite=True to resume"):
        tl.build([b, bad], out, **{**KW, "strict": True})
    assert docs_of(out) == want
    tl.open_dataset(out).verify(progress=False)
    # With overwrite the resume is allowed, and discards what does not match.
    tl.build([b], out, overwrite=True, **KW)
    assert docs_of(out) == [[7, 8, 0]]
    assert not (out / ".parts").exists()


def test_a_build_stopped_after_its_commit_finishes_without_overwrite(tmp_path: Path) -> None:
    a, b, _ = corpora(tmp_path)
    out = tmp_path / "out"
    tl.build([a, b], out, **KW)
    clean = docs_of(out)
    # As if stopped between the merge and the removal of .parts.
    parts_src = tmp_path / "stash"
    r = subprocess.run(
        [sys.executable, "-c", STOP_AFTER_COMMIT, str(a), str(b), str(parts_src)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert (parts_src / ".parts" / "build.json").exists()
    assert (parts_src / "manifest.json").exists()
    result = tl.build([a, b], parts_src, **KW)  # no overwrite: it is this build's own result
    assert result.resumed_tasks == 2
    assert docs_of(parts_src) == clean
    assert not (parts_src / ".parts").exists()


# Runs a build whose .parts removal fails, so the committed dataset and .parts both remain.
STOP_AFTER_COMMIT = """
import shutil, sys
import tokenloom as tl
b = sys.modules["tokenloom.build"]
b.shutil.rmtree = lambda *a, **k: None  # the kill lands after the merge's commit
tl.build([sys.argv[1], sys.argv[2]], sys.argv[3], token_field="ids", vocab_size=100,
         eos_id=0, progress=False, strict=True)
"""


def test_cli_build_after_kill_does_not_replace(tmp_path: Path) -> None:
    a, b, bad = corpora(tmp_path)
    out = tmp_path / "out"
    tl.build([a], out, **KW)
    want = docs_of(out)
    common = ["build", "--token-field", "ids", "--vocab-size", "100", "--eos-id", "0", "-q"]
    r = subprocess.run(
        [str(TOKENLOOM), *common, "--strict", "--overwrite", "-o", str(out), str(b), str(bad)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 1
    r = subprocess.run(
        [str(TOKENLOOM), *common, "-o", str(out), str(b)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "unfinished build" in r.stderr
    assert docs_of(out) == want


# ---------------------------------------------------------------------------------------------
# 2. the writer refuses what is not an integer, naming the document and position


@pytest.mark.parametrize(
    ("call", "doc", "pos", "value", "kept"),
    [
        (lambda w: w.add([[1.5, 2.7], [3.9]]), 0, 0, "1.5", []),
        (lambda w: w.add_many([["4", "5"], [True]]), 0, 0, "'4'", []),
        (lambda w: w.add_many([[4, 5], [True]]), 1, 0, "True", [[4, 5]]),
        (lambda w: w.add([1, 2, 3.0]), 0, 2, "3.0", []),
        (lambda w: w.add(np.array([[1.0, 2.0]])), 0, 0, "1.0", []),
        (lambda w: w.add_many([np.array([1, 2]), np.array([0.5])]), 1, 0, "0.5", [[1, 2]]),
        (lambda w: w.add_many_flat([1, 2, 3.5, 4], [2, 2]), 1, 0, "3.5", []),
        (lambda w: w.add_many_flat(np.array([1.0, 2.0]), [2]), 0, 0, "1.0", []),
    ],
)
def test_non_integer_tokens_are_refused_by_name(
    tmp_path: Path, call: object, doc: int, pos: int, value: str, kept: list[list[int]]
) -> None:
    """Nothing is rounded; ``add_many`` streams, so the documents before the bad one stay."""
    with tl.DatasetWriter(tmp_path / "ds", "u16") as w:
        with pytest.raises(ValueError, match="not an integer") as e:
            call(w)  # type: ignore[operator]
        assert f"document {doc}: the token at position {pos} is {value}" in str(e.value)
        w.add([1, 2])
    assert docs_of(tmp_path / "ds") == [*kept, [1, 2]]


def test_float_lengths_are_refused(tmp_path: Path) -> None:
    with tl.DatasetWriter(tmp_path / "ds", "u16") as w:
        with pytest.raises(ValueError, match=r"lengths\[0\] is 1.5, not an integer"):
            w.add_many_flat(np.arange(4), [1.5, 3.0])
        with pytest.raises(ValueError, match="negative"):
            w.add_many_flat(np.arange(4), [5, -1])


def test_negative_tokens_are_shown_as_numbers(tmp_path: Path) -> None:
    with (
        tl.DatasetWriter(tmp_path / "ds", "u16") as w,
        pytest.raises(ValueError, match="token -3 at position 1"),
    ):
        w.add([1, -3])


# ---------------------------------------------------------------------------------------------
# 3. other boundaries over the same tokens: stale plans rebuilt, stale orders refused


def test_rewritten_boundaries_rebuild_plans_and_refuse_orders(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    tokens = np.arange(1, 61, dtype=np.int64)
    with tl.DatasetWriter(ds, "u16", eos_id=0) as w:
        w.add_many_flat(tokens, [10] * 6)
    order = tmp_path / "ds.order"
    tl.write_order(ds, order, [5, 4, 3, 2, 1, 0], [0, 3, 6])
    kw = {"seq_len": 8, "batch_size": 2, "output": "numpy", "seed": 0}
    list(tl.TokenDataset(ds, mode="pack", **kw))
    list(tl.TokenDataset(ds, order=order, **kw))
    # The same tokens, documents cut elsewhere.
    with tl.DatasetWriter(ds, "u16", eos_id=0, overwrite=True) as w:
        w.add_many_flat(tokens, [20, 5, 5, 5, 5, 20])
    packed = [b["input_ids"] for b in tl.TokenDataset(ds, mode="pack", **kw)]
    fresh = tmp_path / "fresh"
    with tl.DatasetWriter(fresh, "u16", eos_id=0) as w:
        w.add_many_flat(tokens, [20, 5, 5, 5, 5, 20])
    want = [b["input_ids"] for b in tl.TokenDataset(fresh, mode="pack", **kw)]
    assert len(packed) == len(want)
    assert all((p == q).all() for p, q in zip(packed, want, strict=True))
    with pytest.raises(ValueError, match="made for another dataset"):
        list(tl.TokenDataset(ds, order=order, **kw))
    # Also after the plan cache is gone.
    for p in (ds / ".plans").glob("*"):
        p.unlink()
    with pytest.raises(ValueError, match="made for another dataset"):
        list(tl.TokenDataset(ds, order=order, **kw))


# ---------------------------------------------------------------------------------------------
# 6. two writers of one target


HOLD_WRITER = """
import sys
import tokenloom as tl
w = tl.DatasetWriter(sys.argv[1], "u16", overwrite=True)
w.add([1, 2, 3])
print("ready", flush=True)
sys.stdin.readline()
w.close()
print("committed", flush=True)
"""


def test_a_second_writer_is_told_who_holds_the_dataset(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    with tl.DatasetWriter(ds, "u16") as w:
        w.add([9])
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITER, str(ds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(tl.LockedError, match=f"process {proc.pid} ") as e:
            tl.DatasetWriter(ds, "u16", overwrite=True)
        assert "DatasetWriter" in str(e.value)
        assert e.value.path == str(ds)  # type: ignore[attr-defined]
        with pytest.raises(tl.LockedError):
            tl.build([write_jsonl(tmp_path / "c.jsonl", [{"ids": [1]}])], ds, overwrite=True, **KW)
        out, _ = proc.communicate("go\n", timeout=60)
    assert "committed" in out
    assert docs_of(ds) == [[1, 2, 3]]
    tl.open_dataset(ds).verify(progress=False)
    assert not (ds / ".lock").exists()


# ---------------------------------------------------------------------------------------------
# 7. special files in place of the dataset's files; 8. planted symlinks


def run_reader(ds: Path, order: Path) -> str:
    r = subprocess.run(
        [sys.executable, "-c", hostile.READER, str(ds), str(order)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, f"reader died ({r.returncode}): {r.stderr[-2000:]}"
    return r.stdout.strip()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("pristine")
    hostile.write_dataset(root / "ds")
    tl.write_order(root / "ds", root / "ds.order", list(range(39, -1, -1)), [0, 20, 40])
    answer = run_reader(root / "ds", root / "ds.order")
    assert answer.startswith("ok"), answer
    return root, answer


def targets(ds: Path) -> dict[str, Path]:
    return {
        "manifest": ds / "manifest.json",
        "idx": sorted(ds.glob("part-*.idx"))[1],
        "bin": sorted(ds.glob("part-*.bin"))[1],
        "src": sorted(ds.glob("part-*.src"))[0],
        "plan": sorted((ds / ".plans").glob("*.plan"))[0],
        "order": ds.parent / "ds.order",
    }


@pytest.mark.parametrize(
    "kind",
    [  # the ones that hung or read without end run by default; the rest with -m slow
        k if k in ("fifo", "dev-zero") else pytest.param(k, marks=pytest.mark.slow)
        for k in hostile.SPECIAL_KINDS
    ],
)
@pytest.mark.parametrize("target", ["manifest", "idx", "bin", "src", "plan", "order"])
def test_special_files_are_refused_not_waited_on(
    pristine: tuple[Path, str], tmp_path: Path, target: str, kind: str
) -> None:
    root, answer = pristine
    import shutil

    shutil.copytree(root, tmp_path / "w", symlinks=True)
    ds = tmp_path / "w" / "ds"
    path = targets(ds)[target]
    hostile.plant_special(path, kind)
    got = run_reader(ds, ds.parent / "ds.order")
    if target == "plan":
        assert got == answer, got  # a cached plan that cannot be read is rebuilt
    else:
        assert got.startswith("error"), got
        assert path.name in got, got


def test_dev_zero_as_manifest_is_refused_at_once(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "manifest.json").symlink_to("/dev/zero")
    with pytest.raises(OSError, match="character device, not a regular file"):
        tl.open_dataset(ds)


def test_a_huge_manifest_is_refused(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    ds.mkdir()
    with (ds / "manifest.json").open("wb") as f:
        f.truncate((256 << 20) + 1)  # sparse: no disk used
    with pytest.raises(OSError, match="more than the 268435456 bytes"):
        tl.open_dataset(ds)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_cli_index_refuses_special_files(tmp_path: Path, kind: str) -> None:
    raw = tmp_path / "tok.bin"
    hostile.plant_special(raw, kind)
    r = subprocess.run(
        [str(TOKENLOOM), "-q", "index", str(raw), "--dtype", "u16", "--eos", "0"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert r.returncode == 1, r
    assert "not a regular file" in r.stderr
    assert not (tmp_path / "tok.idx").exists()


def test_cli_index_refuses_to_write_over_its_token_file(tmp_path: Path) -> None:
    raw = tmp_path / "tok.idx"
    raw.write_bytes(np.array([5, 0, 6, 0], dtype=np.uint16).tobytes())
    before = raw.read_bytes()
    r = subprocess.run(
        [str(TOKENLOOM), "-q", "index", str(raw), "--dtype", "u16", "--eos", "0", "--overwrite"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "is the token file itself" in r.stderr
    assert raw.read_bytes() == before


def test_planted_symlinks_are_not_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    ds = tmp_path / "ds"
    ds.mkdir()
    for name in (".tmp.manifest.json", ".tmp.part-00000.g1.bin", ".tmp.part-00000.g1.idx"):
        (ds / name).symlink_to(outside)
    with tl.DatasetWriter(ds, "u16") as w:
        w.add([1, 2, 3])
    assert outside.read_text() == "precious"
    assert docs_of(ds) == [[1, 2, 3]]
    # A build's own state files too.
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"ids": [4, 5]}])
    parts = tmp_path / "built" / ".parts"
    parts.mkdir(parents=True)
    (parts / "build.json.tmp").symlink_to(outside)
    tl.build([corpus], tmp_path / "built", **KW)
    assert outside.read_text() == "precious"
    assert docs_of(tmp_path / "built") == [[4, 5, 0]]


# ---------------------------------------------------------------------------------------------
# 5. sizes beyond memory; 9. the last generation


ABORT_CHECK = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
sys.modules["torch"] = None
import tokenloom as tl
try:
    tl.BatchSelector(keep=8, buffer_size=10**6, sketch=(64, 1024))
except (ValueError, MemoryError) as e:
    print("refused:", e)
"""


def test_a_selector_too_large_for_memory_is_an_error_not_an_abort() -> None:
    r = subprocess.run(
        [sys.executable, "-c", ABORT_CHECK], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "refused:" in r.stdout, r.stdout
    assert "buffer_size" in r.stdout


def test_the_last_generation_is_refused(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    with tl.DatasetWriter(ds, "u16") as w:
        w.add([1])
    (ds / f"part-00000.g{2**64 - 1}.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="is the largest there is"):
        tl.DatasetWriter(ds, "u16", overwrite=True)
    assert docs_of(ds) == [[1]]


def test_manifest_type_errors_name_their_offset(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    with tl.DatasetWriter(ds, "u16") as w:
        w.add([1])
    text = (ds / "manifest.json").read_text()
    damaged = text.replace('"num_docs": 1', '"num_docs": "one"', 1)
    (ds / "manifest.json").write_text(damaged)
    with pytest.raises(tl.CorruptShardError) as e:
        tl.open_dataset(ds)
    at = damaged.index('"num_docs": "one"')
    assert at <= e.value.offset <= at + len('"num_docs": "one"'), (e.value.offset, at)  # type: ignore[attr-defined]
    json.loads(damaged)  # valid JSON: only the type is wrong
    assert os.path.getsize(ds / "manifest.json") > 0
