"""The Ray engine of in-context ordering (``tokenloom.order(..., engine="ray")``).

The driver embeds the documents (or takes the given embeddings), cuts them into coarse parts
of similar documents with spherical k-means in the core (balanced: no part holds more than
about twice its share), and sends each part's vectors through the object store to one Ray task.
Each task builds its part's kNN graph, removes near-duplicates and walks it exactly as the
local engine walks the whole corpus. The driver chains the parts so that consecutive ones are
similar, concatenates their paths and writes the order file through the same core step as the
local engine (contexts, report against a random order, metadata naming the engine). Only
documents of one part can be neighbours, so near-duplicates that fall in different parts are
both kept, and the path restarts at every part boundary.
"""

from __future__ import annotations

import importlib
import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tokenloom import _core
from tokenloom.ray_tasks import collect, limit_threads, session

if TYPE_CHECKING:
    from pathlib import Path

# Default parts per CPU of the Ray cluster, and the fewest documents per part for a given k.
PARTS_PER_CPU = 4
DOCS_PER_K = 50
# A k-means cluster of fewer than this many times k documents joins its nearest cluster.
MIN_PART_PER_K = 10

_Part = tuple[Any, ...]


def default_partitions(cpus: int, docs: int, k: int) -> int:
    """``PARTS_PER_CPU`` parts per CPU, fewer when parts would hold under ``DOCS_PER_K · k``
    documents, and at least 2."""
    return max(2, min(PARTS_PER_CPU * max(1, cpus), docs // (DOCS_PER_K * k)))


def _order_part(
    embeddings: npt.NDArray[np.float32], docs: npt.NDArray[np.int64], settings: dict[str, Any]
) -> _Part:
    """Runs on a Ray worker: the order of one part."""
    limit_threads()
    return tuple(_core.order_partition(embeddings, docs, settings, progress=False))


def _bar(show: bool, total: int) -> Any:
    if not show:
        return None
    try:
        tqdm: Any = importlib.import_module("tqdm.auto").tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="ordering parts on Ray", unit="part", leave=False)


def order_on_ray(
    root: Path,
    name: str,
    settings: dict[str, Any],
    embeddings: npt.NDArray[np.float32] | None,
    source: dict[str, Any],
    dim: int,
    max_tokens: int,
    partitions: int | None,
    progress: bool,
) -> dict[str, Any]:
    """Orders the dataset at ``root`` on Ray (see the module documentation) and returns the
    report; ``settings`` are the ordering settings of ``order_partition``."""
    seed, k = settings["seed"], settings["k"]
    with session() as ray:
        clock = time.perf_counter()
        seconds: dict[str, float] = {}

        def lap(what: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            seconds[what] = now - clock
            clock = now

        vectors = _core.order_embeddings(
            root,
            name,
            embeddings=embeddings,
            dim=dim,
            max_tokens=max_tokens,
            seed=seed,
            progress=progress,
        )
        lap("embed")
        if partitions is None:
            live = int(np.count_nonzero(vectors.any(axis=1)))
            cpus = int(ray.cluster_resources().get("CPU", 1))
            partitions = default_partitions(cpus, live, k)
        members, centroids = _core.order_partitions(
            root, vectors, partitions, MIN_PART_PER_K * k, seed=seed, progress=progress
        )
        lap("partition")
        remote = ray.remote(num_cpus=1)(_order_part)
        running = {remote.remote(vectors[m], m, settings): p for p, m in enumerate(members)}
        results: list[_Part | None] = [None] * len(members)
        bar = _bar(progress, len(members))

        def done(p: int, part: _Part) -> None:
            results[p] = part
            if bar is not None:
                bar.update(1)

        try:
            collect(ray, running, done)
        finally:
            if bar is not None:
                bar.close()
        lap("parts")
        _, report = _core.order_join(
            root,
            name,
            vectors,
            centroids,
            [r for r in results if r is not None],
            partitions,
            settings,
            source=json.dumps(source),
            progress=progress,
        )
    out: dict[str, Any] = json.loads(report)
    out["seconds"] = {**seconds, **out["seconds"]}
    return out
