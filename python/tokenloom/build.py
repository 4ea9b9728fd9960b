"""Building a dataset from text corpora: read, tokenize, write, in parallel and resumable.

Each input file (or group of Parquet row groups) is one *task*. A task tokenizes its records
and commits its own small dataset under ``<out>/.parts/``, with a provenance sidecar and a
``done.json`` recording the input's path, size and mtime. When every task is done the parts are
merged, in input order, into one dataset at ``<out>`` by the core (hard links and one manifest
written atomically) and ``.parts/`` is removed. An interrupted build keeps its finished parts;
running it again redoes only the rest and yields the same dataset.
"""

from __future__ import annotations

import ast
import concurrent.futures as cf
import contextlib
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
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tokenloom import _core

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

from tokenloom._build.errors import BuildInputError
from tokenloom._build.inputs import (
    Settings,
    Task,
    expand_inputs,
    kind_of,
    plan_tasks,
    task_dir,
)
from tokenloom._build.parts import (
    MAX_MESSAGES,
    Progress,
    init_worker,
    load_done,
    run_task,
    worker_task,
    write_json_atomic,
)
from tokenloom._build.tokenizer import Encoder, TokSpec, resolve_tokenizer

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
    progress: bool = True,
    overwrite: bool = False,
    batch_size: int = 1000,
    shard_bytes: int = 1 << 30,
    quiet: bool | None = None,
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
        progress: a progress bar and, at the end, a printed summary (``False``: neither).
        quiet: deprecated; ``quiet=True`` is ``progress=False``.
        overwrite: replace an existing dataset at ``out``.

    ``out`` may be an object store URL (``s3://...``, see :func:`tokenloom.open_dataset`): the
    dataset is built in a staging directory under the cache directory (resumable like a local
    build) and uploaded when complete, its manifest last.

    Re-running after an interruption reuses the finished parts in ``out/.parts`` and gives the
    same dataset as an uninterrupted run. With ``workers > 1`` the calling script needs the
    usual ``if __name__ == "__main__":`` guard (worker processes are spawned, and run the
    script again as they start): a call from outside it raises ``RuntimeError`` before
    anything is written. A missing optional package (``tokenizers``, ``zstandard``,
    ``pyarrow``) raises ``ImportError`` naming ``pip install 'tokenloom[build]'``.
    """
    if quiet is not None:
        warnings.warn(
            "build(quiet=) is deprecated: use progress=False", DeprecationWarning, stacklevel=2
        )
        progress = not quiet
    start = time.monotonic()
    _refuse_build_in_bootstrap()
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if engine not in ("local", "ray"):
        raise ValueError(f'engine must be "local" or "ray", got {engine!r}')
    if engine == "ray":
        from tokenloom.ray_tasks import import_ray

        import_ray()  # fail before any work when Ray is missing
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    paths = expand_inputs(inputs)
    _require_extras(tokenizer, paths)
    spec = resolve_tokenizer(tokenizer, eos_id, vocab_size, append_eos)
    settings = Settings(spec, text_field, token_field, strict, batch_size, shard_bytes)
    if spec.kind == "none" and token_field is None and any(kind_of(p) != "npy" for p in paths):
        raise ValueError("text inputs need a tokenizer (or pass token_field= for token columns)")
    out_s = os.fspath(out)
    if _core.is_url(out_s):
        return _build_remote(
            out_s,
            overwrite,
            progress,
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
                progress=progress,
                overwrite=True,
                batch_size=batch_size,
                shard_bytes=shard_bytes,
            ),
        )
    if os.path.exists(out_s) and not os.path.isdir(out_s):
        raise FileExistsError(f"{out_s}: exists and is not a directory")
    created = not os.path.exists(out_s)
    parts_dir = os.path.join(os.path.abspath(out_s), PARTS_DIR)
    tasks = plan_tasks(paths)
    if engine == "local" and workers > 1 and len(tasks) > 1:
        _refuse_unguarded_main(workers)
    # The output is locked for the whole build: a second build (or any writer) there fails
    # at once, naming this one, instead of mixing its files with ours.
    lock = _core.DatasetLock(out_s, "build")
    try:
        inputs = _inputs_key(paths)
        dirs = [task_dir(parts_dir, t, settings) for t in tasks]
        committed = _check_destination(out_s, parts_dir, spec, settings, inputs, dirs, overwrite)
        os.makedirs(parts_dir, exist_ok=True)
        write_json_atomic(
            os.path.join(parts_dir, "build.json"),
            {"tokenizer": spec.fingerprint, "settings": settings.key(), "inputs": inputs},
        )
        records: list[dict[str, Any] | None] = [load_done(d) for d in dirs]
        todo = [i for i, r in enumerate(records) if r is None]
        resumed = len(tasks) - len(todo)
        bar = Progress(sum(t.bytes_share for t in tasks), not progress)
        for i, r in enumerate(records):
            if r is not None:
                bar.update(r["num_docs"], r["num_tokens"], tasks[i].bytes_share)
        try:
            if engine == "ray":
                from tokenloom._build.ray import run_on_ray

                run_on_ray(tasks, dirs, todo, records, settings, bar)
            elif workers == 1 or len(todo) <= 1:
                encoder = Encoder(spec)
                for i in todo:
                    records[i] = run_task(tasks[i], settings, dirs[i], encoder, bar.update)
            else:
                _run_parallel(tasks, dirs, todo, records, settings, workers, bar)
        finally:
            bar.close()
        final: list[dict[str, Any]] = [r for r in records if r is not None]
        if not committed:
            _core.merge_datasets(out_s, list(dirs), overwrite=overwrite, lock=lock)
        shutil.rmtree(parts_dir, ignore_errors=True)
    except BaseException:
        lock.release()
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(out_s)  # only when nothing was kept there
        raise
    lock.release()
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
        room = MAX_MESSAGES - len(result.messages)
        result.messages.extend(r["messages"][: max(0, room)])
    if progress:
        print(result.summary(), file=sys.stderr)
    return result


def _build_remote(
    url: str, overwrite: bool, progress: bool, build_at: Callable[[str], BuildResult]
) -> BuildResult:
    """Builds in a staging directory (the same one on a rerun, so it resumes), then uploads."""
    key = hashlib.sha1(url.encode()).hexdigest()[:16]
    stage = os.path.join(os.path.dirname(_core.staging_dir(url)), f"build-{key}")
    result = build_at(stage)
    _core.upload_dataset(stage, url, overwrite=overwrite, progress=progress)
    shutil.rmtree(stage, ignore_errors=True)
    result.path = url
    return result


_GUARD = 'if __name__ == "__main__":'


def _refuse_build_in_bootstrap() -> None:
    """Worker processes are spawned: each runs the main script again as it starts. A build
    reached there is an unguarded call of the script, and would write beside the real one."""
    if getattr(mp.current_process(), "_inheriting", False):
        raise RuntimeError(
            f"tl.build was called while a worker process started: put the script's build "
            f"calls under `{_GUARD}` (worker processes run the script again as they start)"
        )


def _refuse_unguarded_main(workers: int) -> None:
    """Refuses, before anything is written, a build with workers from a line of the main
    script that its spawned worker processes would run again (not under the guard)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    name = getattr(getattr(main, "__spec__", None), "name", "") or ""
    if main is None or path is None or name == "__main__" or name.endswith(".__main__"):
        return  # interactive, or `python -m package`: the children do not run it
    frame = sys._getframe()
    while frame.f_back is not None and not (
        frame.f_code.co_name == "<module>" and frame.f_globals is main.__dict__
    ):
        frame = frame.f_back
    if frame.f_globals is not main.__dict__:
        return
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return
    line = frame.f_lineno
    for node in ast.walk(tree):
        body = _guarded_body(node)
        if body and body[0].lineno <= line <= (body[-1].end_lineno or line):
            return
    raise RuntimeError(
        f"{path}, line {line}: tl.build(workers={workers}) starts worker processes, which run "
        f"this script again as they start; put the call under `{_GUARD}` (or pass workers=1)"
    )


def _guarded_body(node: ast.AST) -> list[ast.stmt] | None:
    """The statements that run only in the main process under ``node``, when it is
    ``if __name__ == "__main__":`` (either way round; the ``else`` of ``!=``)."""
    if not isinstance(node, ast.If):
        return None
    test = node.test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return None
    sides = [test.left, test.comparators[0]]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    consts = [s.value for s in sides if isinstance(s, ast.Constant)]
    if names != ["__name__"] or consts != ["__main__"]:
        return None
    if isinstance(test.ops[0], ast.Eq):
        return node.body
    return node.orelse if isinstance(test.ops[0], ast.NotEq) else None


_EXTRAS = {  # optional module: what needs it
    "tokenizers": "a tokenizer.json tokenizer",
    "zstandard": "reading .zst inputs",
    "pyarrow": "reading Parquet inputs",
}


def _require_extras(tokenizer: Any, paths: list[str]) -> None:
    """One line naming the extra to install when an optional package the build needs is
    missing, before anything is written."""
    needed = []
    if isinstance(tokenizer, (str, os.PathLike)):
        needed.append("tokenizers")
    if any(p.lower().endswith(".zst") for p in paths):
        needed.append("zstandard")
    if any(kind_of(p) == "parquet" for p in paths):
        needed.append("pyarrow")
    missing = [m for m in needed if not _importable(m)]
    if missing:
        raise ImportError(
            f"{_EXTRAS[missing[0]]} needs {missing[0]}, which is not installed: "
            "pip install 'tokenloom[build]'"
        )


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _inputs_key(paths: list[str]) -> list[str]:
    """What identifies a build's inputs: the input files, absolute, in order. (A file changed
    since is the same input: its task is redone, the others are reused.)"""
    return [os.path.abspath(p) for p in paths]


def _check_destination(
    out: str,
    parts_dir: str,
    spec: TokSpec,
    settings: Settings,
    inputs: list[str],
    dirs: list[str],
    overwrite: bool,
) -> bool:
    """Decides, under the output's lock, whether this build may write ``out``. An unfinished
    build found in ``.parts`` is resumed only when it had the same inputs, tokenizer and
    settings; a committed dataset is replaced only with ``overwrite``, resume or not. Returns
    True when ``out`` already holds this very build's result (an earlier run committed it and
    was stopped before removing ``.parts``)."""
    state = os.path.join(parts_dir, "build.json")
    prev: dict[str, Any] | None = None
    if os.path.isdir(parts_dir) and os.path.exists(state):
        try:
            with open(state, encoding="utf-8") as f:
                prev = json.load(f)
        except (OSError, ValueError):
            prev = None
        if not isinstance(prev, dict):
            prev = {}
    has_dataset = os.path.exists(os.path.join(out, "manifest.json"))
    if prev is not None:
        differs = []
        if prev.get("settings") != settings.key():
            differs.append(
                f"tokenizer {prev.get('tokenizer')} and its settings (this one: tokenizer "
                f"{spec.fingerprint})"
                if prev.get("tokenizer") != spec.fingerprint
                else "other settings (fields, EOS, vocabulary, strict, shard size)"
            )
        if prev.get("inputs") != inputs:
            differs.append("other input files")
        if differs:
            if not overwrite:
                raise BuildInputError(
                    f"{out}: an unfinished build there used {' and '.join(differs)}. Resume it "
                    "with the same inputs, tokenizer and settings, or pass overwrite=True to "
                    "discard it and start over"
                    + (" (that replaces the dataset there)" if has_dataset else "")
                )
            shutil.rmtree(parts_dir)
            prev = None
    if not has_dataset:
        return False
    if prev is not None and _is_result_of(out, dirs):
        return True  # committed by the interrupted run: only .parts is left to remove
    if overwrite:
        return False
    ds = _core.open_dataset(out)
    if ds.tokenizer is not None and ds.tokenizer != spec.fingerprint:
        raise BuildInputError(
            f"{out}: holds a dataset tokenized with {ds.tokenizer}; this build uses "
            f"{spec.fingerprint}. Choose another directory or pass overwrite=True"
        )
    if prev is not None:
        raise FileExistsError(
            f"{out}: a dataset exists, and the unfinished build in {parts_dir} would replace "
            "it; pass overwrite=True to resume that build and replace the dataset"
        )
    raise FileExistsError(f"{out}: a dataset exists; pass overwrite=True to replace it")


def _shard_sums(path: str) -> list[tuple[Any, ...]] | None:
    try:
        with open(os.path.join(path, "manifest.json"), encoding="utf-8") as f:
            m = json.load(f)
        return [(s["bin_xxh3"], s["idx_xxh3"], s["num_docs"], s["num_tokens"]) for s in m["shards"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _is_result_of(out: str, dirs: list[str]) -> bool:
    """Whether the dataset at ``out`` is the merge of the finished parts ``dirs``: the same
    shards (checksums and counts), in the same order."""
    if not all(load_done(d) is not None for d in dirs):
        return False
    parts: list[tuple[Any, ...]] = []
    for d in dirs:
        sums = _shard_sums(d)
        if sums is None:
            return False
        parts.extend(sums)
    return _shard_sums(out) == parts


def _run_parallel(
    tasks: list[Task],
    dirs: list[str],
    todo: list[int],
    records: list[dict[str, Any] | None],
    settings: Settings,
    workers: int,
    progress: Progress,
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
        initializer=init_worker,
        initargs=(spec, queue, max(1, (os.cpu_count() or 1) // processes)),
    )
    try:
        futures = {pool.submit(worker_task, tasks[i], settings, dirs[i]): i for i in todo}
        for fut in cf.as_completed(futures):
            records[futures[fut]] = fut.result()
    except cf.process.BrokenProcessPool as e:
        pool.shutdown(wait=True, cancel_futures=True)
        raise RuntimeError(
            "a build worker process died (its error, if any, is printed above); when that "
            f"happens as the workers start, the script most likely lacks `{_GUARD}`"
        ) from e
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        stop.set()
        reader.join()
        queue.close()
