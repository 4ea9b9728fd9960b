"""tokenloom.knn: the kNN graph against a NumPy brute force, input handling, errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pytest
import tokenloom as tl
from hypothesis import given, settings
from hypothesis import strategies as st

if TYPE_CHECKING:
    from pathlib import Path


def unit_rows(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(x: npt.NDArray[np.floating], k: int) -> npt.NDArray[np.float64]:
    """Each row's best ``k`` cosine similarities to the other rows, in float64."""
    u = unit_rows(x)
    s = u @ u.T
    np.fill_diagonal(s, -np.inf)
    return -np.sort(-s, axis=1)[:, :k]


def check_graph(ids: np.ndarray, sims: np.ndarray, x: np.ndarray, k: int) -> None:
    """k distinct other rows per row, with their true cosines, sorted (ties by id)."""
    n = len(x)
    assert ids.dtype == np.int64
    assert sims.dtype == np.float32
    assert ids.shape == sims.shape == (n, k)
    assert ((ids >= 0) & (ids < n)).all()
    assert (ids != np.arange(n)[:, None]).all(), "a row lists itself"
    assert all(len(set(row)) == k for row in ids.tolist())
    u = unit_rows(x)
    true = np.einsum("id,ikd->ik", u, u[ids])
    np.testing.assert_allclose(sims, true, atol=1e-5)
    assert (np.diff(sims, axis=1) <= 0).all()
    ties = np.diff(sims, axis=1) == 0
    assert (np.diff(ids, axis=1)[ties] > 0).all()


def clustered(n: int, d: int, clusters: int, seed: int) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d))
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, d))
    return x.astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 80),
    d=st.integers(1, 10),
    k=st.integers(1, 12),
    seed=st.integers(0, 2**31),
    exact=st.booleans(),
)
def test_small_inputs_match_brute_force(n: int, d: int, k: int, seed: int, exact: bool) -> None:
    k = min(k, n - 1)
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    ids, sims = tl.knn(x, k, exact=exact, progress=False)
    check_graph(ids, sims, x, k)
    np.testing.assert_allclose(sims, brute_force(x, k), atol=1e-5)


def test_the_index_finds_most_neighbours_and_is_deterministic() -> None:
    # 20,000 rows: the smallest input the index is used for rather than the exact search.
    x = clustered(20_000, 16, 200, seed=1)
    ids, sims = tl.knn(x, 10, progress=False)
    check_graph(ids, sims, x, 10)
    truth, _ = tl.knn(x, 10, exact=True, progress=False)
    recall = np.mean([len(np.intersect1d(a, b)) for a, b in zip(ids, truth, strict=False)]) / 10
    assert recall >= 0.9
    again, _ = tl.knn(x, 10, progress=False)
    np.testing.assert_array_equal(ids, again)
    narrow, _ = tl.knn(x, 10, nlist=400, nprobe=1, train_size=20_000, seed=3, progress=False)
    assert not np.array_equal(narrow, ids), "the settings are not passed on"


def test_scale_and_dtype_do_not_change_cosine_neighbours() -> None:
    x = clustered(300, 12, 6, seed=2)
    ids, sims = tl.knn(x, 5, progress=False)
    ids3, sims3 = tl.knn(3.0 * x.astype(np.float64), 5, progress=False)
    np.testing.assert_array_equal(ids, ids3)
    np.testing.assert_allclose(sims, sims3, atol=1e-6)
    half = x.astype(np.float16)
    ids16, sims16 = tl.knn(half, 5, progress=False)
    check_graph(ids16, sims16, half.astype(np.float32), 5)


def test_inner_product_without_normalising(tmp_path: Path) -> None:
    x = clustered(200, 8, 4, seed=3)
    x[0] *= 10  # a long row: large inner products, unchanged cosines
    np.save(tmp_path / "emb.npy", x)
    mapped = np.load(tmp_path / "emb.npy", mmap_mode="r")
    ids, sims = tl.knn(mapped, 3, normalize=False, progress=False)
    dots = x.astype(np.float64) @ x.T.astype(np.float64)
    np.testing.assert_allclose(sims, np.take_along_axis(dots, ids, axis=1), rtol=1e-5)
    np.fill_diagonal(dots, -np.inf)
    np.testing.assert_allclose(sims, -np.sort(-dots, axis=1)[:, :3], rtol=1e-5)
    cosine, _ = tl.knn(x, 3, progress=False)
    assert (ids == 0).sum() > (cosine == 0).sum()


def test_progress_bar_runs() -> None:
    x = clustered(100, 4, 3, seed=4)
    ids, _ = tl.knn(x, 2, progress=True)
    assert ids.shape == (100, 2)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros(5, dtype=np.float32), r"2-D \[N, d\] array, got shape \(5,\)"),
        (np.ones((5, 3), dtype=np.int32), "floating point"),
    ],
)
def test_bad_arrays_are_rejected(bad: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tl.knn(bad, 2, progress=False)


@pytest.mark.parametrize("normalize", [True, False])
def test_bad_rows_are_named(normalize: bool) -> None:
    x = clustered(50, 4, 2, seed=5)
    x[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"row.? 7 hold.? NaN or infinity"):
        tl.knn(x, 3, normalize=normalize, progress=False)
    x[7, 1] = np.inf
    with pytest.raises(ValueError, match=r"row.? 7 hold.? NaN or infinity"):
        tl.knn(x, 3, normalize=normalize, progress=False)
    x[7, 1] = 0.5
    x[31] = 0
    with pytest.raises(ValueError, match=r"row.? 31 (is|are) all zeros"):
        tl.knn(x, 3, normalize=normalize, progress=False)


def test_bad_settings_are_rejected() -> None:
    x = clustered(50, 4, 2, seed=6)
    with pytest.raises(ValueError, match="k = 50 needs more than 50 rows"):
        tl.knn(x, 50, progress=False)
    with pytest.raises(ValueError, match="k must be an integer ≥ 1"):
        tl.knn(x, 0, progress=False)
    with pytest.raises(TypeError, match="k must be an integer"):
        tl.knn(x, 2.5, progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nprobe must be an integer ≥ 1"):
        tl.knn(x, 2, nprobe=0, progress=False)
    with pytest.raises(ValueError, match="invalid nlist: 51 lists for 50 rows"):
        tl.knn(x, 2, nlist=51, progress=False)
    with pytest.raises(ValueError, match="invalid train_size"):
        tl.knn(x, 2, nlist=20, train_size=10, progress=False)
