"""The orders compared with ICLM, written as order files so that rows are packed exactly as
ICLM's are (documents flowing through rows of ``seq_len + 1`` tokens): a random permutation,
and k-means clustering (the paper's weaker baseline, after SemDeDup: documents grouped by
cluster, clusters and their members in random order). Used by benches/order_quality.py and
benches/context_benefit.py."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import tokenloom as tl
from tokenloom import _core


def random_order(root: Path, name: str, seed: int) -> Path:
    """Every document of ``root`` in a seeded random order, as ``orders/<name>.order``."""
    n = len(tl.open_dataset(root))
    docs = np.random.default_rng(seed).permutation(n)
    path = root / "orders" / f"{name}.order"
    path.parent.mkdir(exist_ok=True)
    tl.write_order(root, path, docs, [0, n])
    return path


def builtin_vectors(root: Path, seed: int = 0) -> np.ndarray:
    """The built-in (lexical) document vectors ICLM orders with by default, through the
    staged engine's two passes (document frequencies, then the projection, stored as
    float16), as float32."""
    n = len(tl.open_dataset(root))
    idf = _core.order_idf(_core.order_frequencies(root, 0, n, 256, 2048, seed), n)
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "vectors.npy"
        _core.order_embed_part(root, 0, n, idf, dest, 256, 2048, seed)
        return np.load(dest).astype(np.float32)


def kmeans_order(
    root: Path, name: str, seed: int, vectors: np.ndarray, clusters: int | None = None
) -> Path:
    """Documents grouped by spherical k-means cluster of ``vectors`` (default ``√N``
    clusters), clusters in random order and members in random order inside each, as
    ``orders/<name>.order``."""
    n = len(tl.open_dataset(root))
    parts = clusters or max(2, round(math.sqrt(n)))
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "vectors.npy", v)
        # Spherical k-means (the staged engine's inverted-list training) on every row.
        centroids = _core.order_centroids(root, [Path(tmp) / "vectors.npy"], parts, n, seed, False)
    cluster = np.concatenate(
        [np.argmax(v[a : a + 65536] @ centroids.T, axis=1) for a in range(0, n, 65536)]
    )
    cluster[~v.any(axis=1)] = -1  # featureless documents: no cluster
    members = [np.flatnonzero(cluster == c) for c in range(len(centroids))]
    rng = np.random.default_rng(seed)
    docs = np.concatenate([rng.permutation(members[c]) for c in rng.permutation(len(members))])
    listed = np.zeros(n, dtype=bool)
    listed[docs] = True
    docs = np.concatenate([docs, rng.permutation(np.flatnonzero(~listed))])  # featureless docs
    path = root / "orders" / f"{name}.order"
    path.parent.mkdir(exist_ok=True)
    tl.write_order(root, path, docs, [0, n])
    return path
