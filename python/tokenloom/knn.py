"""k-nearest-neighbour graph of an embedding matrix, by cosine similarity.

``knn(embeddings, k)`` returns, for each of the ``N`` rows, the ``k`` most similar other rows
and their similarities, best first (ties by smaller id). The search runs in the Rust core with
the GIL released: exact blocked matrix products, or (the default) an inverted file over
spherical k-means whose lists are joined with the lists of their nearest centroids, with
exact similarities inside the joined lists. Inputs below 20,000 rows are always searched
exactly. Results are deterministic for a seed, whatever the number of threads.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _core

# Rows normalised per step, so that a memory-mapped input is never copied whole in float64.
_CHUNK = 16384


def _count(name: str, value: Any, minimum: int) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if isinstance(value, bool) or v < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return v


def _rows(bad: npt.NDArray[np.bool_], offset: int) -> str:
    rows = (np.flatnonzero(bad) + offset).tolist()
    return ", ".join(map(str, rows[:5])) + (" ..." if len(rows) > 5 else "")


def _unit_rows(x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """``x`` as float32 with L2-normalised rows; rejects non-finite and zero rows by index."""
    out = np.empty(x.shape, dtype=np.float32)
    for start in range(0, x.shape[0], _CHUNK):
        chunk = np.asarray(x[start : start + _CHUNK], dtype=np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", chunk, chunk))
        if not np.isfinite(norms).all():
            raise ValueError(
                f"embeddings rows {_rows(~np.isfinite(norms), start)} hold NaN or infinity; "
                "fix or drop those documents' embeddings"
            )
        if (norms == 0).any():
            raise ValueError(
                f"embeddings rows {_rows(norms == 0, start)} are all zeros and have no direction "
                "for cosine similarity; drop those documents or give them embeddings"
            )
        out[start : start + _CHUNK] = chunk / norms[:, None]
    return out


def knn(
    embeddings: npt.ArrayLike,
    k: int,
    *,
    exact: bool = False,
    nlist: int | None = None,
    nprobe: int | None = None,
    train_size: int | None = None,
    seed: int = 0,
    normalize: bool = True,
    progress: bool = True,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The ``k`` nearest neighbours of every row of ``embeddings`` (``[N, d]``), self excluded.

    Args:
        embeddings: a float32/float16/float64 ``[N, d]`` array (a memory-mapped ``.npy`` is read
            in place when it is float32 and ``normalize=False``).
        k: neighbours per row, ``1 ≤ k < N``.
        exact: search every pair instead of the inverted-file index.
        nlist: lists of the index (default about ``2·√N``), ``1 ≤ nlist ≤ N``.
        nprobe: lists each list is joined with, itself included (default 8); higher is
            slower and finds more of the true neighbours.
        train_size: rows sampled to train k-means (default 16 per list, at least 10,000).
        seed: seed of the training sample and of k-means.
        normalize: L2-normalise rows first, so that similarities are cosines. With ``False``
            the rows are compared by plain inner product.
        progress: show a tqdm bar (when tqdm is installed); Ctrl-C cancels.

    Returns:
        ``(neighbors, similarities)``: int64 and float32 arrays of shape ``[N, k]``, most similar
        first.

    Raises:
        ValueError: not a 2-D float array, rows with NaN/infinity or all zeros (named by index),
            ``k`` outside ``1..N-1``, or index settings out of range.
        tokenloom.JobCancelledError: the search was interrupted (Ctrl-C re-raises
            KeyboardInterrupt).
    """
    x = embeddings if isinstance(embeddings, np.ndarray) else np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D [N, d] array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"embeddings must be floating point (float32/float16), got {x.dtype}")
    k = _count("k", k, 1)
    if k >= x.shape[0]:
        raise ValueError(
            f"k = {k} needs more than {k} rows but embeddings has {x.shape[0]}; "
            "a row is not its own neighbour, so k must be below N"
        )
    settings = {
        name: None if v is None else _count(name, v, 1)
        for name, v in (("nlist", nlist), ("nprobe", nprobe), ("train_size", train_size))
    }
    seed = _count("seed", seed, 0)
    x = _unit_rows(x) if normalize else np.ascontiguousarray(x, dtype=np.float32)
    return _core.knn_graph(x, k, bool(exact), seed=seed, progress=progress, **settings)
