"""The hostile cases, in one place: what to plant where a dataset's file should be, and the
small programs that read or write through them. ``test_hostile.py`` runs each case once;
the corruption sweep (``corruption_worker.py``) draws from the same kinds at random, so that
a change of format runs through all of them.

Each case ends in a typed error naming the file, or in the data the dataset holds; never in
a hang, a crash (a signal), or other data.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

# What can stand where a regular file belongs.
SPECIAL_KINDS = ("fifo", "dev-zero", "directory", "dangling-symlink", "loop-symlink")


def plant_special(path: Path, kind: str) -> None:
    """Replaces ``path`` (a file of the dataset) by a file of the hostile ``kind``."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    elif kind == "dangling-symlink":
        path.symlink_to(path.parent / "no-such-file")
    elif kind == "loop-symlink":
        path.symlink_to(path)
    else:
        raise ValueError(kind)


def remove_planted(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write_dataset(root: Path, seed: int = 11, docs: int = 40) -> list[list[int]]:
    """A small dataset in several shards, with provenance sidecars; returns its documents."""
    import tokenloom as tl
    from tokenloom import _core

    rng = np.random.default_rng(seed)
    out = [rng.integers(1, 1000, size=int(n)).tolist() for n in rng.integers(1, 50, size=docs)]
    with tl.DatasetWriter(root, "u16", eos_id=0, vocab_size=1000, shard_bytes=300) as w:
        for d in out:
            w.add(d)
    _core.write_sources(root, [("corpus.jsonl", 0)], np.arange(docs, dtype=np.uint64))
    return out


# Reads a dataset every way there is, in a child process; prints "ok <digest>" or
# "error <class> <message>". A hang or a signal shows in the parent as no answer.
READER = r"""
import hashlib, sys
sys.modules["torch"] = None  # numpy output; starts fast
import numpy as np
import tokenloom as tl
ds_path, order = sys.argv[1], sys.argv[2]
h = hashlib.sha256()
try:
    ds = tl.open_dataset(ds_path)
    for i in range(len(ds)):
        h.update(ds[i].tobytes())
        ds.source(i)
    for mode in ("pack", "ordered"):
        loader = tl.TokenDataset(ds_path, seq_len=16, batch_size=4, mode=mode, seed=1,
                                 order=order if mode == "ordered" else None, output="numpy",
                                 threads=1)
        for b in loader:
            h.update(np.ascontiguousarray(b["input_ids"]).tobytes())
    ds.verify(check_vocab=True, progress=False)
    print("ok", h.hexdigest(), flush=True)
except (tl.TokenloomError, OSError, ValueError) as e:
    print("error", type(e).__name__, str(e).replace("\n", " "), flush=True)
"""
