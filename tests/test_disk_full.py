"""A write that runs out of room: a clean error naming the file, the previous dataset (index,
order file) intact, nothing half-written that opens as valid.

Writes fail for real, in a subprocess: under ``RLIMIT_FSIZE`` (with ``SIGXFSZ`` ignored) every
write past the limit fails with EFBIG, on any machine; on a small tmpfs mounted in a private
mount namespace (where ``unshare`` is allowed) the disk fills and writes fail with ENOSPC."""

from __future__ import annotations

import errno
import json
import resource
import shutil
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tokenloom as tl
from conftest import write_docs

if TYPE_CHECKING:
    from pathlib import Path

LIMIT = 4096  # bytes a file may grow to in the limited subprocess
# The `tokenloom` command, started without torch (which the CLI does not need).
TOKENLOOM = [
    sys.executable,
    "-c",
    "import sys; sys.modules['torch'] = None; from tokenloom.cli import main; sys.exit(main())",
]

# Runs one write under the limit; prints the error it raised as one JSON line.
WRITE = """
import json, sys
sys.modules["torch"] = None
import numpy as np
import tokenloom as tl
what, path, arg = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    if what == "writer":  # one big shard
        with tl.DatasetWriter(path, overwrite=True) as w:
            for i in range(100):
                w.add(np.full(500, i + 1, dtype=np.uint16))
    elif what == "manifest":  # many small shards: the manifest is what outgrows the limit
        with tl.DatasetWriter(path, overwrite=True, shard_bytes=64) as w:
            for i in range(40):
                w.add([i + 1] * 20)
    elif what == "build":
        tl.build(arg, out=path, tokenizer=lambda t: [b + 1 for b in t.encode()], vocab_size=257,
                 eos_id=0, overwrite=True, progress=False)
    elif what == "order":
        n = len(tl.open_dataset(path))
        tl.write_order(path, arg, list(range(n))[::-1], [0, n])
    print(json.dumps(None))
except Exception as e:
    print(json.dumps({"type": type(e).__name__, "errno": getattr(e, "errno", None),
                      "message": str(e), "path": getattr(e, "path", None)}))
"""


def limited() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def run_limited(*args: str | Path) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", WRITE, *map(str, args)],
        preexec_fn=limited,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"writer died with status {proc.returncode}: {proc.stderr}"
    err = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(err, dict), "the write did not fail: the limit is not in force"
    return err


def snapshot(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def read_all(path: Path) -> list[list[int]]:
    ds = tl.open_dataset(path)
    ds.verify(progress=False)
    return [ds[i].tolist() for i in range(len(ds))]


def assert_too_large(err: dict[str, object], where: Path) -> None:
    assert err["type"] == "OSError"
    assert err["errno"] == errno.EFBIG
    assert str(where) in str(err["message"])
    assert "file size limit" in str(err["message"])
    assert "previous dataset is untouched" in str(err["message"])


@pytest.mark.parametrize("what", ["writer", "manifest"])
def test_writer_out_of_room_keeps_previous(dataset: Path, docs: list[list[int]], what: str) -> None:
    before = snapshot(dataset)
    err = run_limited(what, dataset, "")
    assert_too_large(err, dataset)
    assert snapshot(dataset) == before  # the writer removed everything it had written
    assert read_all(dataset) == docs


def test_new_dataset_out_of_room_leaves_nothing(tmp_path: Path) -> None:
    err = run_limited("writer", tmp_path / "new", "")
    assert_too_large(err, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_build_out_of_room_keeps_previous_and_resumes(
    tmp_path: Path, dataset: Path, docs: list[list[int]]
) -> None:
    corpus = tmp_path / "in.jsonl"
    texts = [f"document {i} " * 40 for i in range(60)]
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    err = run_limited("build", dataset, corpus)
    assert_too_large(err, dataset)
    assert read_all(dataset) == docs  # the previous dataset still opens, whole
    # Once there is room, the same build completes (reusing what was committed).
    tl.build(
        corpus,
        out=dataset,
        tokenizer=lambda t: [b + 1 for b in t.encode()],
        vocab_size=257,
        eos_id=0,
        overwrite=True,
        progress=False,
    )
    assert read_all(dataset) == [[b + 1 for b in t.encode()] + [0] for t in texts]


def test_order_file_out_of_room_keeps_previous(tmp_path: Path) -> None:
    # 1,500 documents: the ids (u32 in order files v3) outgrow the 4,096-byte limit.
    ds = write_docs(tmp_path / "ds", [[i % 900 + 1] for i in range(1500)])
    order = tmp_path / "ds.order"
    tl.write_order(ds, order, list(range(1500)), [0, 750, 1500])
    before = order.read_bytes()
    err = run_limited("order", ds, order)
    assert err["errno"] == errno.EFBIG
    assert str(order.parent) in str(err["message"])
    assert order.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "ds.order"]


def test_index_out_of_room_keeps_previous(tmp_path: Path) -> None:
    raw = tmp_path / "raw.bin"
    tokens = np.tile(np.array([5, 6, 7, 0], dtype=np.uint16), 2000)
    tokens.tofile(raw)
    first = subprocess.run(
        [*TOKENLOOM, "--quiet", "index", str(raw), "--dtype", "u16", "--eos", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    idx = raw.with_suffix(".idx")
    before = idx.read_bytes()
    again = subprocess.run(
        [
            *TOKENLOOM,
            "--quiet",
            "index",
            str(raw),
            "--dtype",
            "u16",
            "--eos",
            "0",
            "--boundary",
            "before",
            "--overwrite",
        ],
        preexec_fn=limited,
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode not in (0, -signal.SIGXFSZ), again.stderr
    assert "file size limit" in again.stderr
    assert idx.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.bin", "raw.idx"]
    assert tl.open_dataset(raw)[0].tolist() == [5, 6, 7, 0]


# The same on a full disk: a 1 MiB tmpfs in a private mount namespace.
FULL_DISK = """
import errno, json, os, sys
sys.modules["torch"] = None
import numpy as np
import tokenloom as tl
root = sys.argv[1]
old = [[i + 1] * 100 for i in range(50)]
with tl.DatasetWriter(root, eos_id=0) as w:
    for d in old:
        w.add(d)
before = sorted(os.listdir(root))
try:
    with tl.DatasetWriter(root, overwrite=True, shard_bytes=256 << 10) as w:
        for i in range(400):
            w.add(np.full(4096, 3, dtype=np.uint16))
    out = {"error": None}
except OSError as e:
    ds = tl.open_dataset(root)
    ds.verify(progress=False)
    out = {"errno": e.errno, "message": str(e),
           "intact": [ds[i].tolist() for i in range(len(ds))] == old,
           "same_files": sorted(os.listdir(root)) == before}
print(json.dumps(out))
"""


def test_full_disk_keeps_previous(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    probe = [unshare or "unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m none {tmp_path}"]
    if unshare is None or subprocess.run(probe, capture_output=True, check=False).returncode:
        pytest.skip("no private mount namespace here (unshare -rm with a tmpfs mount)")
    script = tmp_path / "full.py"
    script.write_text(FULL_DISK)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(
        [
            unshare,
            "-rm",
            "sh",
            "-c",
            'mount -t tmpfs -o size=1m none "$1" && exec "$2" "$3" "$1/ds"',
            "sh",
            str(mnt),
            sys.executable,
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["errno"] == errno.ENOSPC, out
    assert "the disk is full" in out["message"]
    assert out["intact"]
    assert out["same_files"]
