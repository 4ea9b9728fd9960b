"""One build task: read its input, tokenize, and commit it as a part dataset with provenance."""

from __future__ import annotations

import array
import contextlib
import importlib
import json
import os
import shutil
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from tokenloom import _core
from tokenloom.shard import DatasetWriter

if TYPE_CHECKING:
    from collections.abc import Callable

from tokenloom._build.errors import BuildInputError
from tokenloom._build.inputs import (
    READERS,
    empty_skip,
    Settings,
    Skip,
    Task,
)
from tokenloom._build.tokenizer import Encoder, TokSpec

MAX_MESSAGES = 1000


# ---------------------------------------------------------------------------------------------
# One task: read, tokenize, write a part dataset


def write_json_atomic(path: str, obj: Any) -> None:
    """Writes ``obj`` as JSON to ``path`` through a temporary file created new (``O_EXCL``,
    ``O_NOFOLLOW``: a symbolic link planted at its name is never written through)."""
    tmp = path + ".tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a leftover of a stopped run, or a planted link
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(tmp, flags, 0o644), "w", encoding="utf-8") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _Flat:
    """Concatenated tokens (as u32; the writer narrows and range-checks them) and lengths of
    a batch of documents."""

    def __init__(self) -> None:
        self.tokens = array.array("I")
        self.lengths: list[int] = []
        self.rows: list[int] = []


def _where(task: Task, row: int) -> str:
    return f"{task.path}: line {row + 1}" if task.kind == "jsonl" else f"{task.path}: row {row}"


def run_task(
    task: Task,
    settings: Settings,
    part: str,
    encoder: Encoder,
    progress: Callable[[int, int, int], None],
) -> dict[str, Any]:
    """Builds the part dataset of one task; returns its record (also saved as done.json)."""
    spec = settings.spec
    skipped: dict[str, int] = {}
    messages: list[str] = []
    rows: list[int] = []
    num_tokens = 0
    eos = [spec.eos_id] if spec.append_eos else []

    def skip(sk: Skip) -> None:
        if settings.strict:
            raise BuildInputError(sk.message + " (strict mode)")
        skipped[sk.reason] = skipped.get(sk.reason, 0) + 1
        if len(messages) < MAX_MESSAGES:
            messages.append(sk.message)

    if os.path.isdir(part):
        shutil.rmtree(part)
    os.makedirs(part)
    pending_bytes = [0]

    def on_bytes(n: int) -> None:
        pending_bytes[0] += n

    with DatasetWriter(
        part, spec.dtype, eos_id=None if spec.eos_id < 0 else spec.eos_id,
        vocab_size=spec.vocab_size, tokenizer=spec.fingerprint,
        shard_bytes=settings.shard_bytes, overwrite=True,
    ) as w:  # fmt: skip
        texts: list[str] = []
        text_rows: list[int] = []

        def flush_texts() -> None:
            nonlocal num_tokens
            if not texts:
                return
            flat = _Flat()
            for row, ids in zip(text_rows, encoder.encode(texts), strict=True):
                if len(ids) == 0:
                    skip(empty_skip(_where(task, row)))
                    continue
                n = len(flat.tokens)
                try:
                    flat.tokens.extend(ids)
                except (OverflowError, TypeError) as e:
                    raise BuildInputError(
                        f"{_where(task, row)}: the tokenizer returned an id that is not a "
                        f"non-negative integer below 2**32 ({e})"
                    ) from e
                flat.tokens.extend(eos)
                flat.lengths.append(len(flat.tokens) - n)
                flat.rows.append(row)
            if flat.lengths:
                w.add_many_flat(np.frombuffer(flat.tokens, dtype=np.uint32), flat.lengths)
                rows.extend(flat.rows)
                num_tokens += len(flat.tokens)
            progress(len(flat.lengths), len(flat.tokens), pending_bytes[0])
            pending_bytes[0] = 0
            texts.clear()
            text_rows.clear()

        for row, value in READERS[task.kind](task, settings, on_bytes):
            if isinstance(value, Skip):
                skip(value)
            elif isinstance(value, str):
                texts.append(value)
                text_rows.append(row)
                if len(texts) >= settings.batch_size:
                    flush_texts()
            else:
                flush_texts()
                doc = np.concatenate([value, np.asarray(eos, dtype=np.int64)]) if eos else value
                w.add(doc)
                rows.append(row)
                num_tokens += int(doc.size)
                progress(1, int(doc.size), pending_bytes[0])
                pending_bytes[0] = 0
        flush_texts()
    progress(0, 0, pending_bytes[0])
    runs = [(task.path, 0)] if rows else []
    _core.write_sources(part, runs, np.asarray(rows, dtype=np.uint64))
    record = {
        "path": task.file,
        "size": task.size,
        "mtime_ns": task.mtime_ns,
        "row_groups": list(task.row_groups),
        "num_docs": len(rows),
        "num_tokens": num_tokens,
        "skipped": skipped,
        "messages": messages,
    }
    write_json_atomic(os.path.join(part, "done.json"), record)
    return record


# Worker-process state (spawned processes: set by init_worker).
_W_ENCODER: Encoder | None = None
_W_QUEUE: Any = None


def init_worker(spec: TokSpec, queue: Any, threads: int) -> None:
    global _W_ENCODER, _W_QUEUE
    # The tokenizer's thread pool starts on first use: share the cores among the workers.
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
    _W_ENCODER = Encoder(spec)
    _W_QUEUE = queue


def worker_task(task: Task, settings: Settings, part: str) -> dict[str, Any]:
    assert _W_ENCODER is not None
    return run_task(task, settings, part, _W_ENCODER, lambda d, t, b: _W_QUEUE.put((d, t, b)))


# ---------------------------------------------------------------------------------------------
# The driver


class Progress:
    def __init__(self, total_bytes: int, quiet: bool) -> None:
        self.docs = self.tokens = 0
        self.bar: Any = None
        self._last = 0.0
        if not quiet:
            try:
                tqdm: Any = importlib.import_module("tqdm.auto").tqdm
            except ImportError:
                return
            self.bar = tqdm(
                total=total_bytes, unit="B", unit_scale=True, desc="build", dynamic_ncols=True
            )

    def update(self, docs: int, tokens: int, nbytes: int) -> None:
        self.docs += docs
        self.tokens += tokens
        if self.bar is not None:
            self.bar.update(nbytes)
            now = time.monotonic()
            if now - self._last > 0.2:
                self._last = now
                self.bar.set_postfix(
                    docs=f"{self.docs:,}", tokens=f"{self.tokens:,}", refresh=False
                )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix(docs=f"{self.docs:,}", tokens=f"{self.tokens:,}", refresh=False)
            self.bar.close()


def load_done(part: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(part, "done.json"), encoding="utf-8") as f:
            rec: dict[str, Any] = json.load(f)
        return rec
    except (OSError, ValueError):
        return None
