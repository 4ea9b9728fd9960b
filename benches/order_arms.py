"""The orders compared with ICLM, written as order files so that rows are packed exactly as
ICLM's are (documents flowing through rows of ``seq_len + 1`` tokens): a random permutation,
and k-means clustering (the paper's weaker baseline, after SemDeDup: documents grouped by
cluster, clusters and their members in random order). Used by benches/order_quality.py and
benches/context_benefit.py."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import tokenloom as tl
from tokenloom import _core

if TYPE_CHECKING:
    from pathlib import Path


def random_order(root: Path, name: str, seed: int) -> Path:
    """Every document of ``root`` in a seeded random order, as ``orders/<name>.order``."""
    n = len(tl.open_dataset(root))
    docs = np.random.default_rng(seed).permutation(n)
    path = root / "orders" / f"{name}.order"
    path.parent.mkdir(exist_ok=True)
    tl.write_order(root, path, docs, [0, n])
    return path


def builtin_vectors(root: Path, seed: int = 0) -> np.ndarray:
    """The built-in (lexical) document vectors ICLM orders with by default."""
    return _core.order_embeddings(root, "builtin-vectors", None, 256, 2048, seed, False)


def kmeans_order(
    root: Path, name: str, seed: int, vectors: np.ndarray, clusters: int | None = None
) -> Path:
    """Documents grouped by spherical k-means cluster of ``vectors`` (default ``√N``
    clusters), clusters in random order and members in random order inside each, as
    ``orders/<name>.order``."""
    n = len(tl.open_dataset(root))
    parts = clusters or max(2, round(math.sqrt(n)))
    members, _ = _core.order_partitions(root, vectors, parts, 2, seed, False)
    rng = np.random.default_rng(seed)
    docs = np.concatenate([rng.permutation(members[c]) for c in rng.permutation(len(members))])
    listed = np.zeros(n, dtype=bool)
    listed[docs] = True
    docs = np.concatenate([docs, rng.permutation(np.flatnonzero(~listed))])  # featureless docs
    path = root / "orders" / f"{name}.order"
    path.parent.mkdir(exist_ok=True)
    tl.write_order(root, path, docs, [0, n])
    return path
