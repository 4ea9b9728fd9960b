"""Writes are atomic: an aborted or killed write leaves the previous dataset intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tokenloom as tl
from conftest import write_docs

if TYPE_CHECKING:
    from pathlib import Path


def test_existing_dataset_needs_overwrite(dataset: Path) -> None:
    with pytest.raises(FileExistsError, match="overwrite=True") as e:
        tl.DatasetWriter(dataset)
    assert e.value.path == str(dataset)  # type: ignore[attr-defined]


def test_exception_inside_with_keeps_previous(dataset: Path, docs: list[list[int]]) -> None:
    before = sorted(os.listdir(dataset))

    def interrupted_write() -> None:
        with tl.DatasetWriter(dataset, overwrite=True) as w:
            w.add(np.arange(1000) % 900)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_write()
    assert sorted(os.listdir(dataset)) == before
    ds = tl.open_dataset(dataset)
    assert [ds[i].tolist() for i in range(len(ds))] == docs


def test_aborted_new_dataset_leaves_nothing(tmp_path: Path) -> None:
    w = tl.DatasetWriter(tmp_path / "new")
    w.add([1, 2, 3])
    w.abort()
    assert not (tmp_path / "new").exists()


def test_overwrite_replaces_and_cleans(dataset: Path) -> None:
    write_docs(dataset, [[5, 6]], overwrite=True)
    ds = tl.open_dataset(dataset)
    assert len(ds) == 1
    assert ds[0].tolist() == [5, 6]
    assert sorted(p.name for p in dataset.iterdir()) == [
        "manifest.json",
        "part-00000.g2.bin",
        "part-00000.g2.idx",
    ]


# SIGINT is Ctrl-C's KeyboardInterrupt here even when the test runs in a background job, whose
# children start with SIGINT ignored (and then Python installs no handler).
WRITER = """
import signal, sys, numpy as np, tokenloom as tl
signal.signal(signal.SIGINT, signal.default_int_handler)
w = tl.DatasetWriter(sys.argv[1], overwrite=True, shard_bytes=1 << 20)
print("started", flush=True)
while True:
    w.add(np.full(4096, 7, dtype=np.uint16))
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_writer_keeps_previous(dataset: Path, docs: list[list[int]], sig: int) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(dataset)], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 30
        while len(list(dataset.glob("part-*.g2.*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # wait until whole new shards exist under their final names
        proc.send_signal(sig)
        proc.wait(timeout=30)
    assert proc.returncode != 0
    ds = tl.open_dataset(dataset)
    assert [ds[i].tolist() for i in range(len(ds))] == docs
    ds.verify(progress=False)
    leftovers = [p.name for p in dataset.iterdir() if ".g2." in p.name]
    if sig == signal.SIGINT:
        assert leftovers == []  # KeyboardInterrupt aborted the writer: it removed its files
    else:
        assert leftovers  # SIGKILL gives no chance to clean: the files stay, unlisted
    # The next write cleans whatever the killed one left.
    write_docs(dataset, [[1]], overwrite=True)
    names = sorted(p.name for p in dataset.iterdir())
    assert len(names) == 3
    assert names[0] == "manifest.json"
    assert tl.open_dataset(dataset)[0].tolist() == [1]
