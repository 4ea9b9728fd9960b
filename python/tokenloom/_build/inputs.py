"""Inputs of a build: expanding globs, cutting inputs into tasks, streaming their records."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from tokenloom import _core

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from tokenloom._build.tokenizer import TokSpec


_READ_CHUNK = 1 << 20
TASK_BYTES = 64 << 20  # Parquet row groups are grouped into tasks of about this size



# ---------------------------------------------------------------------------------------------
# Inputs and tasks

_TEXT_EXTS = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".json.zst")


def kind_of(path: str) -> str:
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
class Task:
    index: int
    path: str  # as the user named it: in messages and provenance
    file: str  # absolute, for opening it in any process (a worker's directory may differ)
    kind: str
    row_groups: tuple[int, ...]  # Parquet only
    first_row: int
    size: int
    mtime_ns: int
    bytes_share: int  # on-disk bytes this task accounts for, for progress


def plan_tasks(paths: list[str]) -> list[Task]:
    tasks: list[Task] = []
    for path in paths:
        kind = kind_of(path)
        st = os.stat(path)
        for groups, first, share in _pieces(path, kind, st.st_size):
            tasks.append(
                Task(len(tasks), path, os.path.abspath(path), kind, groups, first,
                      st.st_size, st.st_mtime_ns, share)
            )  # fmt: skip
    return tasks


def _pieces(path: str, kind: str, size: int) -> list[tuple[tuple[int, ...], int, int]]:
    """(row groups, first row, share of the file's bytes) of each task of one input: the whole
    file, or for Parquet groups of consecutive row groups of about ``TASK_BYTES``."""
    if kind != "parquet":
        return [((), 0, size)]
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception:
        return [((), 0, size)]  # unreadable: one task that reports it
    pieces: list[tuple[tuple[int, ...], int, int]] = []
    groups: list[int] = []
    first, row, acc = 0, 0, 0
    total = max(1, sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups)))
    for g in range(meta.num_row_groups):
        groups.append(g)
        acc += meta.row_group(g).total_byte_size
        row += meta.row_group(g).num_rows
        if acc >= TASK_BYTES or g == meta.num_row_groups - 1:
            pieces.append((tuple(groups), first, size * acc // total))
            groups, first, acc = [], row, 0
    return pieces or [((), 0, size)]


@dataclass(frozen=True)
class Settings:
    spec: TokSpec
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


def task_dir(parts: str, task: Task, settings: Settings) -> str:
    ident = json.dumps([task.file, task.size, task.mtime_ns, task.row_groups, settings.key()])
    return os.path.join(
        parts, f"{task.index:06d}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"
    )


# ---------------------------------------------------------------------------------------------
# Reading records: each yields (row, text or tokens) or (row, Skip)


@dataclass(frozen=True)
class Skip:
    reason: str
    message: str


def _decompressed(
    f: BinaryIO, new: Callable[[], Any], error: type[Exception], name: str, truncated: str
) -> Iterator[bytes]:
    """Chunks of a stream of concatenated compressed frames (gzip members, zstd frames)."""
    dec = new()
    fed = False
    while chunk := f.read(_READ_CHUNK):
        while chunk:
            fed = True
            try:
                out = dec.decompress(chunk)
            except error as e:
                raise _FileProblem("unreadable", f"not valid {name} data ({e})") from e
            if out:
                yield out
            if dec.eof:
                chunk = dec.unused_data
                dec = new()
                fed = False
            else:
                chunk = b""
    if fed:
        raise _FileProblem("truncated", truncated)


def _raw_chunks(path: str, f: BinaryIO) -> Iterator[bytes]:
    """Decompressed chunks of a plain, gzip or zstd file, streamed; raises _FileProblem on
    damage, including a truncated last frame."""
    low = path.lower()
    if low.endswith(".zst"):
        import zstandard

        yield from _decompressed(
            f,
            lambda: zstandard.ZstdDecompressor().decompressobj(),
            zstandard.ZstdError,
            "zstd",
            "the zstd stream is truncated (its last frame ends early)",
        )
    elif low.endswith(".gz"):
        yield from _decompressed(
            f,
            lambda: zlib.decompressobj(wbits=31),
            zlib.error,
            "gzip",
            "the gzip stream is truncated",
        )
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
    task: Task, s: Settings, progress: Callable[[int], None]
) -> Iterator[tuple[int, Any]]:
    path = task.path
    fld = s.token_field or s.text_field
    try:
        f = open(task.file, "rb")  # noqa: SIM115 (closed below; the generator may be abandoned)
    except OSError as e:
        yield 0, Skip("unreadable file", f"{path}: cannot open ({e.strerror})")
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
                yield row, Skip("not UTF-8", f"{where}: not valid UTF-8 at byte {e.start}")
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                yield (
                    row,
                    Skip("bad JSON", f"{where}: not valid JSON ({e.msg} at column {e.colno})"),
                )
                continue
            if not isinstance(obj, dict):
                yield (
                    row,
                    Skip("not an object", f"{where}: not a JSON object ({type(obj).__name__})"),
                )
                continue
            if fld not in obj:
                yield row, Skip("missing field", f"{where}: no field {fld!r}")
                continue
            yield row, _check_value(obj[fld], s, where)
    except _FileProblem as e:
        yield row + 1, Skip(e.reason + " file", f"{path}: after line {row + 1}: {e}")
    finally:
        progress(max(0, task.size - reported))
        f.close()


def _check_value(value: Any, s: Settings, where: str) -> Any:
    if s.token_field is not None:
        if not isinstance(value, list) or not all(
            isinstance(t, int) and 0 <= t < s.spec.vocab_size for t in value
        ):
            return Skip(
                "bad tokens",
                f"{where}: {s.token_field!r} is not a list of ids below {s.spec.vocab_size}",
            )
        return np.asarray(value, dtype=np.int64) if value else empty_skip(where)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            return Skip("not UTF-8", f"{where}: not valid UTF-8 at byte {e.start}")
    if not isinstance(value, str):
        return Skip(
            "not text", f"{where}: {s.text_field!r} is {type(value).__name__}, not a string"
        )
    if not value.strip():
        return empty_skip(where)
    return value


def empty_skip(where: str) -> Skip:
    return Skip("empty", f"{where}: empty document")


def _read_parquet(
    task: Task, s: Settings, progress: Callable[[int], None]
) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = task.path
    fld = s.token_field or s.text_field
    try:
        pf = pq.ParquetFile(task.file)
    except Exception as e:
        yield 0, Skip("unreadable file", f"{path}: not a readable Parquet file ({e})")
        progress(task.bytes_share)
        return
    names = pf.schema_arrow.names
    if fld not in names:
        yield (
            task.first_row,
            Skip("missing column", f"{path}: no column {fld!r} (columns: {', '.join(names)})"),
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
            yield row, Skip("bad column", f"{path}: column {fld!r} has type {t}, expected {want}")
            break
        values = col.to_pylist()
        for v in values:
            where = f"{path}: row {row}"
            yield (
                row,
                (
                    Skip("missing field", f"{where}: {fld!r} is null")
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
    task: Task, s: Settings, progress: Callable[[int], None]
) -> Iterator[tuple[int, Any]]:
    path = task.path
    try:
        arr = np.load(task.file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        yield 0, Skip("unreadable file", f"{path}: not a readable .npy file ({e})")
        progress(task.size)
        return
    if not np.issubdtype(arr.dtype, np.integer) or arr.ndim not in (1, 2):
        yield (
            0,
            Skip(
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
            yield r, empty_skip(where)
        elif doc.min() < 0 or doc.max() >= s.spec.vocab_size:
            yield r, Skip("bad tokens", f"{where}: token ids outside [0, {s.spec.vocab_size})")
        else:
            yield r, doc
    progress(task.size)


READERS = {"jsonl": _read_jsonl, "parquet": _read_parquet, "npy": _read_npy}
