"""Building a dataset from text corpora: read, tokenize, write, in parallel and resumable.

Each input file (or group of Parquet row groups) is one *task*. A task tokenizes its records
and commits its own small dataset under ``<out>/.parts/``, with a provenance sidecar and a
``done.json`` recording the input's path, size and mtime. When every task is done the parts are
merged, in input order, into one dataset at ``<out>`` by the core (hard links and one manifest
written atomically) and ``.parts/`` is removed. An interrupted build keeps its finished parts;
running it again redoes only the rest and yields the same dataset.
"""

from __future__ import annotations

import array
import concurrent.futures as cf
import glob
import hashlib
import importlib
import json
import multiprocessing as mp
import os
import pickle
import shutil
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import numpy as np

from tokenloom import _core
from tokenloom.shard import DatasetWriter

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence


__all__ = ["BuildInputError", "BuildResult", "build"]

PARTS_DIR = ".parts"
_EOS_NAMES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eos|>")
_READ_CHUNK = 1 << 20
_TASK_BYTES = 64 << 20  # Parquet row groups are grouped into tasks of about this size
_MAX_MESSAGES = 1000


class BuildInputError(_core.TokenloomError, ValueError):
    """A bad input record in strict mode, or an input that cannot be used at all."""


@dataclass
class BuildResult:
    """What a build did. ``skipped`` counts skipped records by reason; ``messages`` names the
    file and line/row of each (the first 1,000)."""

    path: str
    num_docs: int
    num_tokens: int
    num_inputs: int
    resumed_tasks: int
    skipped: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        lines = [
            f"{self.path}: {self.num_docs:,} documents, {self.num_tokens:,} tokens from "
            f"{self.num_inputs} input(s) in {self.seconds:.1f} s"
            + (f" ({self.resumed_tasks} part(s) reused)" if self.resumed_tasks else "")
        ]
        if self.skipped:
            reasons = ", ".join(f"{n:,} {why}" for why, n in sorted(self.skipped.items()))
            lines.append(f"skipped {self.num_skipped:,} record(s): {reasons}")
            lines.extend(f"  {m}" for m in self.messages[:20])
            if len(self.messages) > 20:
                lines.append(f"  ... {self.num_skipped - 20:,} more (BuildResult.messages)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Tokenizers


@dataclass(frozen=True)
class _TokSpec:
    """What a worker needs to rebuild the tokenizer: picklable."""

    kind: Literal["hf", "callable", "none"]
    payload: Any
    vocab_size: int
    eos_id: int
    fingerprint: str | None
    append_eos: bool

    @property
    def dtype(self) -> Literal["u16", "u32"]:
        return "u16" if self.vocab_size <= 65536 else "u32"


class _Encoder:
    def __init__(self, spec: _TokSpec) -> None:
        self.spec = spec
        self._hf: Any = None
        self._fn: Callable[[str], Sequence[int]] | None = None
        if spec.kind == "hf":
            from tokenizers import Tokenizer

            self._hf = Tokenizer.from_str(spec.payload)
        elif spec.kind == "callable":
            self._fn = spec.payload

    def encode(self, texts: list[str]) -> list[Sequence[int]]:
        if self._hf is not None:
            encs = self._hf.encode_batch_fast(texts, add_special_tokens=False)
            return [e.ids for e in encs]
        if self._fn is not None:
            return [self._fn(t) for t in texts]
        raise BuildInputError("text input needs a tokenizer; pass tokenizer=")


def _canonical_json(text: str) -> bytes:
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":")).encode()


def _resolve_tokenizer(
    tokenizer: Any, eos_id: int | None, vocab_size: int | None, append_eos: bool
) -> _TokSpec:
    if tokenizer is None:
        if vocab_size is None:
            raise ValueError("without a tokenizer (token inputs only) pass vocab_size=")
        if append_eos and eos_id is None:
            raise ValueError("pass eos_id= (or append_eos=False)")
        return _TokSpec(
            "none", None, vocab_size, -1 if eos_id is None else eos_id, None, append_eos
        )
    if isinstance(tokenizer, (str, os.PathLike)):
        from tokenizers import Tokenizer

        path = os.fspath(tokenizer)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            hf = Tokenizer.from_str(text)
        except (OSError, ValueError, Exception) as e:
            raise ValueError(f"{path}: cannot load the tokenizer ({e})") from e
    elif type(tokenizer).__module__.startswith("tokenizers") and hasattr(tokenizer, "to_str"):
        hf = tokenizer
        text = hf.to_str()
    elif callable(tokenizer):
        name = f"{getattr(tokenizer, '__module__', '?')}.{getattr(tokenizer, '__qualname__', '?')}"
        vocab = vocab_size if vocab_size is not None else getattr(tokenizer, "vocab_size", None)
        if vocab is None:
            raise ValueError(f"tokenizer {name} is a callable: pass vocab_size=")
        if append_eos and eos_id is None:
            raise ValueError(f"tokenizer {name} is a callable: pass eos_id= (or append_eos=False)")
        digest = hashlib.sha256(f"{name}\0{vocab}".encode()).hexdigest()[:32]
        return _TokSpec(
            "callable", tokenizer, int(vocab), -1 if eos_id is None else eos_id,
            f"callable:{name}:{digest}", append_eos,
        )  # fmt: skip
    else:
        raise TypeError(
            "tokenizer must be a tokenizer.json path, a tokenizers.Tokenizer or a callable "
            f"str -> list[int], got {type(tokenizer).__name__}"
        )
    vocab = vocab_size if vocab_size is not None else hf.get_vocab_size(with_added_tokens=True)
    if eos_id is None and append_eos:
        for name in _EOS_NAMES:
            found = hf.token_to_id(name)
            if found is not None:
                eos_id = int(found)
                break
        else:
            raise ValueError(
                f"the tokenizer has none of the end-of-document tokens {', '.join(_EOS_NAMES)}; "
                "pass eos_id= (or append_eos=False)"
            )
    fp = "tokenizers:sha256:" + hashlib.sha256(_canonical_json(text)).hexdigest()[:32]
    return _TokSpec(
        "hf", text, int(vocab), -1 if eos_id is None else eos_id, fp, append_eos
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Inputs and tasks

_TEXT_EXTS = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".json.zst")


def _kind_of(path: str) -> str:
    low = path.lower()
    if low.endswith(_TEXT_EXTS):
        return "jsonl"
    if low.endswith((".parquet", ".pq")):
        return "parquet"
    if low.endswith(".npy"):
        return "npy"
    raise ValueError(f"{path}: unknown input kind (expected .jsonl[.gz|.zst], .parquet or .npy)")


def expand_inputs(inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[str]:
    """Expands globs (each sorted), keeping the order of the patterns and dropping repeats."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        pattern = os.fspath(item)
        if glob.has_magic(pattern):
            found = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
            if not found:
                raise FileNotFoundError(f"{pattern}: no file matches")
        elif os.path.isfile(pattern):
            found = [pattern]
        else:
            raise FileNotFoundError(f"{pattern}: no such file")
        for p in found:
            key = os.path.abspath(p)
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out


@dataclass(frozen=True)
class _Task:
    index: int
    path: str
    kind: str
    row_groups: tuple[int, ...]  # Parquet only
    first_row: int
    size: int
    mtime_ns: int
    bytes_share: int  # on-disk bytes this task accounts for, for progress


def _plan_tasks(paths: list[str]) -> list[_Task]:
    tasks: list[_Task] = []
    for path in paths:
        kind = _kind_of(path)
        st = os.stat(path)
        if kind != "parquet":
            tasks.append(
                _Task(len(tasks), path, kind, (), 0, st.st_size, st.st_mtime_ns, st.st_size)
            )
            continue
        import pyarrow.parquet as pq

        try:
            meta = pq.ParquetFile(path).metadata
        except Exception as e:
            # Unreadable: one task that reports it.
            tasks.append(
                _Task(len(tasks), path, kind, (), 0, st.st_size, st.st_mtime_ns, st.st_size)
            )
            del e
            continue
        groups: list[int] = []
        first, row, acc = 0, 0, 0
        total = max(1, sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups)))
        for g in range(meta.num_row_groups):
            groups.append(g)
            acc += meta.row_group(g).total_byte_size
            row += meta.row_group(g).num_rows
            if acc >= _TASK_BYTES or g == meta.num_row_groups - 1:
                share = st.st_size * acc // total
                tasks.append(
                    _Task(
                        len(tasks),
                        path,
                        kind,
                        tuple(groups),
                        first,
                        st.st_size,
                        st.st_mtime_ns,
                        share,
                    )
                )
                groups, first, acc = [], row, 0
        if meta.num_row_groups == 0:
            tasks.append(
                _Task(len(tasks), path, kind, (), 0, st.st_size, st.st_mtime_ns, st.st_size)
            )
    return tasks


@dataclass(frozen=True)
class _Settings:
    spec: _TokSpec
    text_field: str
    token_field: str | None
    strict: bool
    batch_size: int
    shard_bytes: int

    def key(self) -> str:
        s = self.spec
        parts = [s.fingerprint, s.vocab_size, s.eos_id, s.append_eos, self.text_field]
        parts += [self.token_field, self.strict, self.shard_bytes]
        return json.dumps(parts)


def _task_dir(parts: str, task: _Task, settings: _Settings) -> str:
    ident = json.dumps(
        [os.path.abspath(task.path), task.size, task.mtime_ns, task.row_groups, settings.key()]
    )
    return os.path.join(
        parts, f"{task.index:06d}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"
    )


# ---------------------------------------------------------------------------------------------
# Reading records: each yields (row, text or tokens) or (row, _Skip)


@dataclass(frozen=True)
class _Skip:
    reason: str
    message: str


def _raw_chunks(path: str, f: BinaryIO) -> Iterator[bytes]:
    """Decompressed chunks of a plain, gzip or zstd file, streamed; raises _FileProblem on
    damage, including a truncated last frame."""
    low = path.lower()
    if low.endswith(".zst"):
        import zstandard

        dobj: Any = zstandard.ZstdDecompressor().decompressobj()
        fed = False
        while chunk := f.read(_READ_CHUNK):
            while chunk:
                fed = True
                try:
                    out = dobj.decompress(chunk)
                except zstandard.ZstdError as e:
                    raise _FileProblem("unreadable", f"not valid zstd data ({e})") from e
                if out:
                    yield out
                if dobj.eof:
                    chunk = dobj.unused_data
                    dobj = zstandard.ZstdDecompressor().decompressobj()
                    fed = False
                else:
                    chunk = b""
        if fed:
            raise _FileProblem(
                "truncated", "the zstd stream is truncated (its last frame ends early)"
            )
    elif low.endswith(".gz"):
        zobj = zlib.decompressobj(wbits=31)
        fed = False
        while chunk := f.read(_READ_CHUNK):
            while chunk:
                fed = True
                try:
                    out = zobj.decompress(chunk)
                except zlib.error as e:
                    raise _FileProblem("unreadable", f"not valid gzip data ({e})") from e
                if out:
                    yield out
                if zobj.eof:
                    chunk = zobj.unused_data
                    zobj = zlib.decompressobj(wbits=31)
                    fed = False
                else:
                    chunk = b""
        if fed:
            raise _FileProblem("truncated", "the gzip stream is truncated")
    else:
        while chunk := f.read(_READ_CHUNK):
            yield chunk


class _FileProblem(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _lines(path: str, f: BinaryIO) -> Iterator[bytes]:
    rest = b""
    for chunk in _raw_chunks(path, f):
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


def _read_jsonl(
    task: _Task, s: _Settings, progress: Callable[[int], None]
) -> Iterator[tuple[int, Any]]:
    path = task.path
    fld = s.token_field or s.text_field
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; the generator may be abandoned)
    except OSError as e:
        yield 0, _Skip("unreadable file", f"{path}: cannot open ({e.strerror})")
        return
    reported = 0
    row = -1
    try:
        for row, line in enumerate(_lines(path, f)):
            pos = f.tell()
            if pos - reported >= _READ_CHUNK:
                progress(pos - reported)
                reported = pos
            if not line.strip():
                continue
            where = f"{path}: line {row + 1}"
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield row, _Skip("not UTF-8", f"{where}: not valid UTF-8 at byte {e.start}")
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                yield (
                    row,
                    _Skip("bad JSON", f"{where}: not valid JSON ({e.msg} at column {e.colno})"),
                )
                continue
            if not isinstance(obj, dict):
                yield (
                    row,
                    _Skip("not an object", f"{where}: not a JSON object ({type(obj).__name__})"),
                )
                continue
            if fld not in obj:
                yield row, _Skip("missing field", f"{where}: no field {fld!r}")
                continue
            yield row, _check_value(obj[fld], s, where)
    except _FileProblem as e:
        yield row + 1, _Skip(e.reason + " file", f"{path}: after line {row + 1}: {e}")
    finally:
        progress(max(0, task.size - reported))
        f.close()


def _check_value(value: Any, s: _Settings, where: str) -> Any:
    if s.token_field is not None:
        if not isinstance(value, list) or not all(
            isinstance(t, int) and 0 <= t < s.spec.vocab_size for t in value
        ):
            return _Skip(
                "bad tokens",
                f"{where}: {s.token_field!r} is not a list of ids below {s.spec.vocab_size}",
            )
        return np.asarray(value, dtype=np.int64) if value else _empty(where)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            return _Skip("not UTF-8", f"{where}: not valid UTF-8 at byte {e.start}")
    if not isinstance(value, str):
        return _Skip(
            "not text", f"{where}: {s.text_field!r} is {type(value).__name__}, not a string"
        )
    if not value.strip():
        return _empty(where)
    return value


def _empty(where: str) -> _Skip:
    return _Skip("empty", f"{where}: empty document")


def _read_parquet(
    task: _Task, s: _Settings, progress: Callable[[int], None]
) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = task.path
    fld = s.token_field or s.text_field
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        yield 0, _Skip("unreadable file", f"{path}: not a readable Parquet file ({e})")
        progress(task.bytes_share)
        return
    names = pf.schema_arrow.names
    if fld not in names:
        yield (
            task.first_row,
            _Skip("missing column", f"{path}: no column {fld!r} (columns: {', '.join(names)})"),
        )
        progress(task.bytes_share)
        return
    total = max(1, sum(pf.metadata.row_group(g).num_rows for g in task.row_groups))
    row, reported = task.first_row, 0
    for batch in pf.iter_batches(
        batch_size=s.batch_size, row_groups=list(task.row_groups), columns=[fld]
    ):
        col = batch.column(0)
        t = col.type
        if s.token_field is not None:
            ok = pa.types.is_list(t) or pa.types.is_large_list(t)
        else:
            ok = any(
                f(t)
                for f in (
                    pa.types.is_string,
                    pa.types.is_large_string,
                    pa.types.is_binary,
                    pa.types.is_large_binary,
                )
            )
        if not ok:
            want = "a list of integers" if s.token_field else "strings"
            yield row, _Skip("bad column", f"{path}: column {fld!r} has type {t}, expected {want}")
            break
        values = col.to_pylist()
        for v in values:
            where = f"{path}: row {row}"
            yield (
                row,
                (
                    _Skip("missing field", f"{where}: {fld!r} is null")
                    if v is None
                    else _check_value(v, s, where)
                ),
            )
            row += 1
        done = task.bytes_share * (row - task.first_row) // total
        progress(done - reported)
        reported = done
    progress(task.bytes_share - reported)


def _read_npy(
    task: _Task, s: _Settings, progress: Callable[[int], None]
) -> Iterator[tuple[int, Any]]:
    path = task.path
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        yield 0, _Skip("unreadable file", f"{path}: not a readable .npy file ({e})")
        progress(task.size)
        return
    if not np.issubdtype(arr.dtype, np.integer) or arr.ndim not in (1, 2):
        yield (
            0,
            _Skip(
                "bad array",
                f"{path}: expected a 1-D or 2-D integer array, got {arr.ndim}-D {arr.dtype}",
            ),
        )
        progress(task.size)
        return
    rows = arr[None, :] if arr.ndim == 1 else arr
    for r in range(rows.shape[0]):
        doc = np.asarray(rows[r], dtype=np.int64)
        where = f"{path}: row {r}"
        if doc.size == 0:
            yield r, _empty(where)
        elif doc.min() < 0 or doc.max() >= s.spec.vocab_size:
            yield r, _Skip("bad tokens", f"{where}: token ids outside [0, {s.spec.vocab_size})")
        else:
            yield r, doc
    progress(task.size)


_READERS = {"jsonl": _read_jsonl, "parquet": _read_parquet, "npy": _read_npy}


# ---------------------------------------------------------------------------------------------
# One task: read, tokenize, write a part dataset


def _write_json_atomic(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
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


def _where(task: _Task, row: int) -> str:
    return f"{task.path}: line {row + 1}" if task.kind == "jsonl" else f"{task.path}: row {row}"


def _run_task(
    task: _Task,
    settings: _Settings,
    part: str,
    encoder: _Encoder,
    progress: Callable[[int, int, int], None],
) -> dict[str, Any]:
    """Builds the part dataset of one task; returns its record (also saved as done.json)."""
    spec = settings.spec
    skipped: dict[str, int] = {}
    messages: list[str] = []
    rows: list[int] = []
    num_tokens = 0
    eos = [spec.eos_id] if spec.append_eos else []

    def skip(sk: _Skip) -> None:
        if settings.strict:
            raise BuildInputError(sk.message + " (strict mode)")
        skipped[sk.reason] = skipped.get(sk.reason, 0) + 1
        if len(messages) < _MAX_MESSAGES:
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
                    skip(_empty(_where(task, row)))
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

        for row, value in _READERS[task.kind](task, settings, on_bytes):
            if isinstance(value, _Skip):
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
        "path": os.path.abspath(task.path),
        "size": task.size,
        "mtime_ns": task.mtime_ns,
        "row_groups": list(task.row_groups),
        "num_docs": len(rows),
        "num_tokens": num_tokens,
        "skipped": skipped,
        "messages": messages,
    }
    _write_json_atomic(os.path.join(part, "done.json"), record)
    return record


# Worker-process state (spawned processes: set by _init_worker).
_W_ENCODER: _Encoder | None = None
_W_QUEUE: Any = None


def _init_worker(spec: _TokSpec, queue: Any) -> None:
    global _W_ENCODER, _W_QUEUE
    _W_ENCODER = _Encoder(spec)
    _W_QUEUE = queue


def _worker_task(task: _Task, settings: _Settings, part: str) -> dict[str, Any]:
    assert _W_ENCODER is not None
    return _run_task(task, settings, part, _W_ENCODER, lambda d, t, b: _W_QUEUE.put((d, t, b)))


# ---------------------------------------------------------------------------------------------
# The driver


class _Progress:
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


def _load_done(part: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(part, "done.json"), encoding="utf-8") as f:
            rec: dict[str, Any] = json.load(f)
        return rec
    except (OSError, ValueError):
        return None


def build(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    tokenizer: Any = None,
    *,
    text_field: str = "text",
    token_field: str | None = None,
    eos_id: int | None = None,
    vocab_size: int | None = None,
    append_eos: bool = True,
    workers: int = 1,
    strict: bool = False,
    quiet: bool = False,
    overwrite: bool = False,
    batch_size: int = 1000,
    shard_bytes: int = 1 << 30,
) -> BuildResult:
    """Tokenizes corpora into one dataset at ``out``.

    Args:
        inputs: files or glob patterns (each expanded and sorted): ``.jsonl``, ``.jsonl.gz``,
            ``.jsonl.zst``, ``.parquet`` (text column, or a ``list<int>`` column with
            ``token_field``) and ``.npy`` token arrays (1-D: one document; 2-D: one per row).
        out: dataset directory to create.
        tokenizer: a ``tokenizer.json`` path, a ``tokenizers.Tokenizer``, or a callable
            ``str -> list[int]`` (then ``vocab_size`` and ``eos_id`` are needed). May be
            ``None`` for token inputs, given ``vocab_size``.
        text_field: JSON field / Parquet column holding the text.
        token_field: JSON field / Parquet column holding token ids instead of text.
        eos_id: end-of-document token appended to every document; default: the tokenizer's
            ``<|endoftext|>``, ``</s>`` or similar.
        workers: processes tokenizing files (and Parquet row-group groups) in parallel; the
            dataset is the same for any value.
        strict: raise ``BuildInputError`` at the first bad record instead of skipping it.
        quiet: no progress bar and no printed summary.
        overwrite: replace an existing dataset at ``out``.

    Re-running after an interruption reuses the finished parts in ``out/.parts`` and gives the
    same dataset as an uninterrupted run. With ``workers > 1`` the calling script needs the
    usual ``if __name__ == "__main__":`` guard (worker processes are spawned).
    """
    start = time.monotonic()
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    spec = _resolve_tokenizer(tokenizer, eos_id, vocab_size, append_eos)
    settings = _Settings(spec, text_field, token_field, strict, batch_size, shard_bytes)
    paths = expand_inputs(inputs)
    if spec.kind == "none" and token_field is None and any(_kind_of(p) != "npy" for p in paths):
        raise ValueError("text inputs need a tokenizer (or pass token_field= for token columns)")
    out_s = os.fspath(out)
    parts_dir = os.path.join(out_s, PARTS_DIR)
    _check_destination(out_s, parts_dir, spec, settings, overwrite)
    os.makedirs(parts_dir, exist_ok=True)
    _write_json_atomic(
        os.path.join(parts_dir, "build.json"),
        {"tokenizer": spec.fingerprint, "settings": settings.key()},
    )
    tasks = _plan_tasks(paths)
    dirs = [_task_dir(parts_dir, t, settings) for t in tasks]
    records: list[dict[str, Any] | None] = [_load_done(d) for d in dirs]
    todo = [i for i, r in enumerate(records) if r is None]
    resumed = len(tasks) - len(todo)
    progress = _Progress(sum(t.bytes_share for t in tasks), quiet)
    for i, r in enumerate(records):
        if r is not None:
            progress.update(r["num_docs"], r["num_tokens"], tasks[i].bytes_share)
    try:
        if workers == 1 or len(todo) <= 1:
            encoder = _Encoder(spec)
            for i in todo:
                records[i] = _run_task(tasks[i], settings, dirs[i], encoder, progress.update)
        else:
            _run_parallel(tasks, dirs, todo, records, settings, workers, progress)
    finally:
        progress.close()
    final: list[dict[str, Any]] = [r for r in records if r is not None]
    _core.merge_datasets(out_s, list(dirs), overwrite=True)
    shutil.rmtree(parts_dir, ignore_errors=True)
    result = BuildResult(
        path=out_s,
        num_docs=sum(r["num_docs"] for r in final),
        num_tokens=sum(r["num_tokens"] for r in final),
        num_inputs=len(paths),
        resumed_tasks=resumed,
        seconds=time.monotonic() - start,
    )
    for r in final:
        for why, n in r["skipped"].items():
            result.skipped[why] = result.skipped.get(why, 0) + n
        room = _MAX_MESSAGES - len(result.messages)
        result.messages.extend(r["messages"][: max(0, room)])
    if not quiet:
        print(result.summary(), file=sys.stderr)
    return result


def _check_destination(
    out: str, parts_dir: str, spec: _TokSpec, settings: _Settings, overwrite: bool
) -> None:
    state = os.path.join(parts_dir, "build.json")
    if os.path.isdir(parts_dir) and os.path.exists(state):
        try:
            with open(state, encoding="utf-8") as f:
                prev = json.load(f)
        except (OSError, ValueError):
            prev = None
        if prev is not None and prev.get("settings") != settings.key():
            if not overwrite:
                raise BuildInputError(
                    f"{out}: an unfinished build there used tokenizer {prev.get('tokenizer')} "
                    f"and other settings; this one uses tokenizer {spec.fingerprint}. Resume with "
                    "the same tokenizer and settings, or pass overwrite=True to start over"
                )
            shutil.rmtree(parts_dir)
        return  # resuming: the earlier run may have committed the merge already
    if os.path.exists(os.path.join(out, "manifest.json")):
        if not overwrite:
            ds = _core.Dataset(out)
            if ds.tokenizer is not None and ds.tokenizer != spec.fingerprint:
                raise BuildInputError(
                    f"{out}: holds a dataset tokenized with {ds.tokenizer}; this build uses "
                    f"{spec.fingerprint}. Choose another directory or pass overwrite=True"
                )
            raise FileExistsError(f"{out}: a dataset exists; pass overwrite=True to replace it")
    elif os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"{out}: exists and is not a directory")


def _run_parallel(
    tasks: list[_Task],
    dirs: list[str],
    todo: list[int],
    records: list[dict[str, Any] | None],
    settings: _Settings,
    workers: int,
    progress: _Progress,
) -> None:
    spec = settings.spec
    if spec.kind == "callable":
        try:
            pickle.dumps(spec.payload)
        except Exception as e:
            raise ValueError(
                "a callable tokenizer must be importable (a module-level function) to run with "
                f"workers > 1 ({e})"
            ) from e
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    stop = threading.Event()

    def drain() -> None:
        import queue as q

        while not stop.is_set() or not queue.empty():
            try:
                d, t, b = queue.get(timeout=0.1)
            except q.Empty:
                continue
            except (EOFError, OSError):
                return
            progress.update(d, t, b)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    pool = cf.ProcessPoolExecutor(
        max_workers=min(workers, len(todo)),
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(spec, queue),
    )
    try:
        futures = {pool.submit(_worker_task, tasks[i], settings, dirs[i]): i for i in todo}
        for fut in cf.as_completed(futures):
            records[futures[fut]] = fut.result()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        stop.set()
        reader.join()
        queue.close()
