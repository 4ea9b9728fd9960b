"""The staged engines of in-context ordering: ``tokenloom.order(..., engine="ray")`` runs each
step's parts as Ray tasks, ``engine="disk"`` runs them one after another in this process. Both
keep the vectors and the kNN lists on disk, in a work folder next to the order
(``<dataset>/orders/.<name>.work``, which every Ray node must see under the same path, like
the dataset), so the driver never holds a ``[N, d]`` array (see
``tokenloom_core::order::staged`` for the steps):

1. embedding shards: the built-in embedder in two passes over parts of the documents
   (document frequencies summed by the driver, feature weights broadcast, each part writes
   its float16 ``.npy``), or the given ``.npy`` shards read in place;
2. centroids of ``nlist`` inverted lists, trained by the driver on a seeded sample of rows;
3. each part assigns its documents to lists and writes them grouped by list;
4. the lists are cut into groups of similar lists and equal work; each group finds the kNN of
   its documents among its lists and their ``nprobe - 1`` nearest lists, in any group;
5. one task merges the groups' lists into the global graph, removes near-duplicates, walks it
   once and writes the order (report, metadata) as the local engine does.

Every file of a step is written atomically, so a step's part whose file exists is done: a run
stopped by Ctrl-C, a lost node or a full disk keeps the finished parts, and running the same
call again resumes from them (other settings start over). The work folder is removed once the
order is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tokenloom import _core
from tokenloom.ray_tasks import cancel, limit_threads, session

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


def staged_settings(seq_len: int, k: int, **given: Any) -> dict[str, Any]:
    """The settings ``order_staged`` takes: ``seq_len``, ``k`` and, unless ``given``
    (``dedup``, ``variant``, ``max_segment``, ``seed``), the core's defaults
    (``_core.ORDER_DEFAULTS``), the reference walk's included."""
    d = _core.ORDER_DEFAULTS
    unknown = set(given) - {"dedup", "variant", "max_segment", "seed"}
    if unknown:
        raise TypeError(f"unknown settings {sorted(unknown)}")
    dedup = given.get("dedup", d["dedup"])
    return {
        "seq_len": int(seq_len),
        "k": int(k),
        "dedup": None if dedup is None else float(dedup),
        "variant": given.get("variant", d["variant"]),
        "max_segment": int(given.get("max_segment", d["max_segment"])),
        "k_traverse": d["reference_k_traverse"],
        "min_segment": d["reference_segment"],
        "seed": int(given.get("seed", d["seed"])),
    }


# Default parts per CPU; default documents per part at least this many.
PARTS_PER_CPU = 4
MIN_PART_DOCS = 20_000
# Ray retries a task whose worker or node died this many times (ray's default).
RETRIES = 3
# Arrays at least this large, passed to several parts of a step, are put into Ray's object
# store once per step.
BROADCAST_BYTES = 1 << 20


def _bar(show: bool, total: int, desc: str) -> Any:
    if not show:
        return None
    try:
        tqdm: Any = importlib.import_module("tqdm.auto").tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="part", leave=False)


def _task(fn: Callable[..., Any], *args: Any) -> Any:
    """Runs on a Ray worker: one step of one part, the core's threads sized to the task."""
    limit_threads()
    return fn(*args)


class _Steps:
    """Runs the parts of a step in this process, or as Ray tasks; the error of a part that
    fails (or whose node is lost beyond the retries) names the step and the part."""

    def __init__(self, ray: Any, progress: bool, work: Path, retries: int) -> None:
        self.ray = ray
        self.progress = progress
        self.work = work
        self.remote = (
            None
            if ray is None
            else ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=False)(_task)
        )

    def cpus(self) -> int:
        if self.ray is None:
            return os.cpu_count() or 1
        return int(self.ray.cluster_resources().get("CPU", 1))

    def lost(self, step: str, part: int, e: BaseException) -> RuntimeError:
        return RuntimeError(
            f"the {step} step's part {part} failed ({type(e).__name__}: {e}); the finished "
            f"parts are kept in {self.work}: run the same tokenloom.order call again to resume"
        )

    def run(self, step: str, calls: dict[int, tuple[Any, ...]]) -> dict[int, Any]:
        """``calls[p] = (fn, *args)``; returns ``{p: result}``."""
        out: dict[int, Any] = {}
        self._run(step, calls, out.__setitem__)
        return out

    def run_sum(self, step: str, calls: dict[int, tuple[Any, ...]]) -> Any:
        """The sum of the parts' results (arrays), added as each arrives: the driver holds
        one result, not one per part."""
        total: list[Any] = []

        def add(_: int, r: Any) -> None:
            if total:
                total[0] += r
            else:
                total.append(np.array(r, copy=True))

        self._run(step, calls, add)
        return total[0]

    def _run(
        self, step: str, calls: dict[int, tuple[Any, ...]], take: Callable[[int, Any], None]
    ) -> None:
        bar = _bar(self.progress, len(calls), f"ordering: {step}")
        try:
            if self.remote is None:
                for p, (fn, *args) in calls.items():
                    take(p, fn(*args))
                    if bar is not None:
                        bar.update(1)
            else:
                self._on_ray(step, calls, take, bar)
        finally:
            if bar is not None:
                bar.close()

    def _on_ray(
        self,
        step: str,
        calls: dict[int, tuple[Any, ...]],
        take: Callable[[int, Any], None],
        bar: Any,
    ) -> None:
        ray = self.ray
        assert self.remote is not None
        # An array several parts share (centroids, feature weights) goes into the object store
        # once and reaches each node once, not pickled into every task's arguments.
        shared: dict[int, Any] = {}

        def once(a: Any) -> Any:
            if isinstance(a, np.ndarray) and a.nbytes >= BROADCAST_BYTES:
                if id(a) not in shared:
                    shared[id(a)] = ray.put(a)
                return shared[id(a)]
            return a

        running = {self.remote.remote(*map(once, c)): p for p, c in calls.items()}
        waiting = list(running)
        try:
            while waiting:
                finished, waiting = ray.wait(waiting, num_returns=1)
                for ref in finished:
                    p = running[ref]
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        cause = getattr(e, "cause", None)
                        if isinstance(cause, (ValueError, OSError, KeyboardInterrupt)):
                            raise cause from None
                        raise self.lost(step, p, e) from None
                    except ray.exceptions.RayError as e:
                        raise self.lost(step, p, e) from None
                    take(p, result)
                    if bar is not None:
                        bar.update(1)
        except BaseException:
            cancel(ray, waiting)
            raise


def _ranges(n: int, parts: int) -> list[tuple[int, int]]:
    return [(p * n // parts, (p + 1) * n // parts) for p in range(parts)]


def _save(path: Path, arr: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically (nothing at ``path`` unless whole and synced), with
    its checksum file beside it."""
    tmp = path.with_name(f".tmp.{path.name}.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.save(f, arr)
            f.flush()
            os.fsync(f.fileno())
        _core.order_seal(tmp, path)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _load(path: Path) -> np.ndarray:
    """A file written by ``_save``, checked against its checksum file first."""
    if not _core.order_check_sealed(path):
        raise _core.CorruptShardError(
            f"{path}: its checksum file is missing; delete the work folder and run again"
        )
    out: np.ndarray = np.load(path)
    return out


@contextlib.contextmanager
def _engine(engine: str) -> Iterator[Any]:
    if engine == "ray":
        with session() as ray:
            yield ray
    else:
        yield None


def order_staged(
    root: Path,
    name: str,
    settings: dict[str, Any],
    shards: list[Path] | None,
    source: dict[str, Any],
    embed: dict[str, Any],
    partitions: int | None,
    engine: str,
    progress: bool,
    retries: int | None = None,
    keep: bool = False,
) -> dict[str, Any]:
    """Orders the dataset at ``root`` with the staged engine (see the module documentation)
    and returns the report. ``shards`` are the given embedding shards (``None``: built-in
    embeddings with the settings ``embed``)."""
    n = len(_core.open_dataset(root))
    seed, k = settings["seed"], settings["k"]
    key = json.dumps(
        [settings, [str(s) for s in shards or []], embed, partitions, n], sort_keys=True
    )
    work = Path(_core.order_work_dir(root, name))
    stamp = work / "run.json"
    if not stamp.exists() or stamp.read_text() != key:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        stamp.write_text(key)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(what: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[what] = now - clock
        clock = now

    def todo(files: dict[int, Path]) -> list[int]:
        return [p for p, f in files.items() if not f.exists()]

    with _engine(engine) as ray:
        steps = _Steps(ray, progress, work, RETRIES if retries is None else retries)
        if partitions is None:
            partitions = max(1, min(PARTS_PER_CPU * steps.cpus(), n // MIN_PART_DOCS))
        ranges = _ranges(n, partitions)
        if shards is None:
            vec = {p: work / f"vectors-{p:05}.npy" for p in range(partitions)}
            idf_file = work / "idf.npy"
            if todo(vec) and not idf_file.exists():
                args = (embed["dim"], embed["max_tokens"], seed)
                df = steps.run_sum(
                    "document frequencies",
                    {
                        p: (_core.order_frequencies, root, a, b, *args)
                        for p, (a, b) in enumerate(ranges)
                    },
                )
                _save(idf_file, _core.order_idf(df, n))
            if todo(vec):
                idf = _load(idf_file)
                shared = idf if ray is None else ray.put(idf)
                steps.run(
                    "embedding",
                    {
                        p: (
                            _core.order_embed_part,
                            root,
                            *ranges[p],
                            shared,
                            vec[p],
                            embed["dim"],
                            embed["max_tokens"],
                            seed,
                        )
                        for p in todo(vec)
                    },
                )
            shards = [vec[p] for p in range(partitions)]
            lap("embed")
        nlist, nprobe, train = _core.order_ivf_defaults(n)
        nprobe = min(nlist, embed.get("nprobe") or nprobe)
        cfile = work / "centroids.npy"
        if not cfile.exists():
            _save(cfile, _core.order_centroids(root, shards, nlist, train, seed, progress))
        centroids = _load(cfile)
        lap("centroids")
        lists = {p: work / f"lists-{p:05}.ivl" for p in range(partitions)}
        steps.run(
            "assigning",
            {
                p: (_core.order_assign_part, root, shards, *ranges[p], centroids, lists[p])
                for p in todo(lists)
            },
        )
        counts = np.stack([_core.order_list_counts(lists[p]) for p in range(partitions)])
        sizes = counts.sum(axis=0, dtype=np.uint64)
        lap("assign")
        memory = embed.get("task_memory") or _core.ORDER_DEFAULTS["task_memory"]
        plans = _core.order_plan_groups(sizes, centroids, nprobe, k, partitions, memory)
        digest = hashlib.sha256(json.dumps(plans).encode()).hexdigest()[:12]
        knn = {g: work / f"knn-{digest}-{g:05}.knn" for g in range(len(plans))}
        part_files = [lists[p] for p in range(partitions)]
        steps.run(
            "kNN",
            {g: (_core.order_knn_group, part_files, *plans[g], k, knn[g]) for g in todo(knn)},
        )
        lap("knn")
        meta = {
            "engine": engine,
            "partitions": partitions,
            "groups": len(plans),
            "nlist": int(nlist),
            "nprobe": int(nprobe),
            "task_memory": int(memory),
        }
        last = (
            _core.order_finish_staged,
            root,
            name,
            shards,
            part_files,
            [knn[g] for g in range(len(plans))],
            settings,
            meta,
            source,
            progress and ray is None,
        )
        (_, report) = steps.run("walk", {0: last})[0]
        lap("walk")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = report
    out["seconds"] = {**seconds, **{f"walk: {a}": b for a, b in out["seconds"].items()}}
    return out
