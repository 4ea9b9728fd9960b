"""Building a dataset from text corpora: read, tokenize, write, in parallel and resumable.

Each input file (or group of Parquet row groups) is one *task*. A task tokenizes its records
and commits its own small dataset under ``<out>/.parts/``, with a provenance sidecar and a
``done.json`` recording the input's path, size and mtime. When every task is done the parts are
merged, in input order, into one dataset at ``<out>`` by the core (hard links and one manifest
written atomically) and ``.parts/`` is removed. An interrupted build keeps its finished parts;
running it again redoes only the rest and yields the same dataset.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing as mp
import os
import pickle
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tokenloom import _core

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

from tokenloom.build_inputs import (
    BuildInputError,
    _kind_of,
    _plan_tasks,
    _Settings,
    _Task,
    _task_dir,
    expand_inputs,
)
from tokenloom.build_parts import (
    _MAX_MESSAGES,
    _init_worker,
    _load_done,
    _Progress,
    _run_task,
    _worker_task,
    _write_json_atomic,
)
from tokenloom.build_tokenizer import _Encoder, _resolve_tokenizer, _TokSpec

__all__ = ["BuildInputError", "BuildResult", "build"]

PARTS_DIR = ".parts"


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
    engine: Literal["local", "ray"] = "local",
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
            dataset is the same for any value. Local engine only.
        engine: ``"local"`` (processes on this machine) or ``"ray"``: one Ray task per file
            (or row-group group) on the Ray instance already initialised, the cluster at
            ``RAY_ADDRESS``, or a local one started for the build. Inputs and ``out`` must be
            on storage every node sees; the dataset is the same as the local engine's.
        strict: raise ``BuildInputError`` at the first bad record instead of skipping it.
        quiet: no progress bar and no printed summary.
        overwrite: replace an existing dataset at ``out``.

    ``out`` may be an object store URL (``s3://...``, see :func:`tokenloom.open_dataset`): the
    dataset is built in a staging directory under the cache directory (resumable like a local
    build) and uploaded when complete, its manifest last.

    Re-running after an interruption reuses the finished parts in ``out/.parts`` and gives the
    same dataset as an uninterrupted run. With ``workers > 1`` the calling script needs the
    usual ``if __name__ == "__main__":`` guard (worker processes are spawned).
    """
    start = time.monotonic()
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if engine not in ("local", "ray"):
        raise ValueError(f'engine must be "local" or "ray", got {engine!r}')
    if engine == "ray":
        from tokenloom.ray_tasks import import_ray

        import_ray()  # fail before any work when Ray is missing
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    spec = _resolve_tokenizer(tokenizer, eos_id, vocab_size, append_eos)
    settings = _Settings(spec, text_field, token_field, strict, batch_size, shard_bytes)
    paths = expand_inputs(inputs)
    if spec.kind == "none" and token_field is None and any(_kind_of(p) != "npy" for p in paths):
        raise ValueError("text inputs need a tokenizer (or pass token_field= for token columns)")
    out_s = os.fspath(out)
    if _core.is_url(out_s):
        return _build_remote(
            out_s,
            overwrite,
            quiet,
            lambda stage: build(
                inputs,
                stage,
                tokenizer,
                text_field=text_field,
                token_field=token_field,
                eos_id=eos_id,
                vocab_size=vocab_size,
                append_eos=append_eos,
                workers=workers,
                engine=engine,
                strict=strict,
                quiet=quiet,
                overwrite=True,
                batch_size=batch_size,
                shard_bytes=shard_bytes,
            ),
        )
    parts_dir = os.path.join(os.path.abspath(out_s), PARTS_DIR)
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
        if engine == "ray":
            from tokenloom.build_ray import run_on_ray

            run_on_ray(tasks, dirs, todo, records, settings, progress)
        elif workers == 1 or len(todo) <= 1:
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


def _build_remote(
    url: str, overwrite: bool, quiet: bool, build_at: Callable[[str], BuildResult]
) -> BuildResult:
    """Builds in a staging directory (the same one on a rerun, so it resumes), then uploads."""
    key = hashlib.sha1(url.encode()).hexdigest()[:16]
    stage = os.path.join(os.path.dirname(_core.staging_dir(url)), f"build-{key}")
    result = build_at(stage)
    _core.upload_dataset(stage, url, overwrite=overwrite, progress=not quiet)
    shutil.rmtree(stage, ignore_errors=True)
    result.path = url
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
    processes = min(workers, len(todo))
    pool = cf.ProcessPoolExecutor(
        max_workers=processes,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(spec, queue, max(1, (os.cpu_count() or 1) // processes)),
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
