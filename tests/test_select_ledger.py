"""Selection accounting on TokenDataset: rows, stats, per-sample counts, re-offering unkept
samples, exact resumption (in process and with DataLoader workers), bad input."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tokenloom as tl
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenloom.rows import concat_rows, take_rows
from torch.utils.data import DataLoader

if TYPE_CHECKING:
    from pathlib import Path

FAST = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def make(path: Path, lengths: list[int], base: int = 0) -> Path:
    with tl.DatasetWriter(path, "u32", eos_id=0, shard_bytes=400) as w:
        for d, n in enumerate(lengths):
            w.add([(base + d) * 1000 + i + 1 for i in range(n)])
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    return make(tmp_path / "c", rng.integers(1, 60, size=60).tolist())


def cu_of_docs(doc: np.ndarray) -> list[int]:
    """cu_seqlens from doc_ids: a piece ends where the document changes or a row ends."""
    flat = doc.reshape(-1)
    cols = doc.shape[1]
    cuts = [i for i in range(1, flat.size) if flat[i] != flat[i - 1] or i % cols == 0]
    return [0, *cuts, flat.size]


def toy_keep(batch: dict[str, Any], k: int) -> np.ndarray:
    """A deterministic 'selector': the k rows with the largest hash of their tokens."""
    ids = np.asarray(batch["input_ids"]).astype(np.int64)
    score = (ids * np.arange(1, ids.shape[1] + 1)).sum(1) * 2654435761 % 100003
    return np.argsort(-score, kind="stable")[:k]


@FAST
@given(
    picks=st.lists(st.integers(0, 5), min_size=0, max_size=6, unique=True), torch_out=st.booleans()
)
def test_take_and_concat_rows_rebuild_cu_seqlens(
    corpus: Path, picks: list[int], torch_out: bool
) -> None:
    ds = tl.TokenDataset(
        corpus, seq_len=24, batch_size=6, mode="pack", output="torch" if torch_out else "numpy"
    )
    b = next(iter(ds))
    part = take_rows(b, picks)
    doc = np.asarray(b["doc_ids"])[picks]
    assert np.asarray(part["cu_seqlens"]).tolist() == cu_of_docs(doc) if picks else [0]
    assert np.asarray(part["input_ids"]).tolist() == np.asarray(b["input_ids"])[picks].tolist()
    assert type(part["input_ids"]) is type(b["input_ids"])
    mask = np.zeros(6, bool)
    mask[picks] = True
    by_mask = take_rows(b, mask)
    assert (
        np.asarray(by_mask["sample_ids"]).tolist()
        == np.asarray(b["sample_ids"])[sorted(picks)].tolist()
    )
    whole = concat_rows(take_rows(b, [0, 1]), take_rows(b, [2, 3, 4, 5]))
    for k in b:
        assert np.asarray(whole[k]).tolist() == np.asarray(b[k]).tolist(), k


def test_stats_and_counts_per_source(tmp_path: Path) -> None:
    a = make(tmp_path / "a", [40] * 12)
    b = make(tmp_path / "b", [25] * 10, base=100)
    ds = tl.TokenDataset([(a, 0.6), (b, 0.4)], seq_len=8, batch_size=5, seed=1)
    rng = np.random.default_rng(0)
    seen, kept = np.zeros(2, int), np.zeros(2, int)
    per_sample = [np.zeros(n, int) for n in ds._get_stream().num_samples]
    for batch in ds:
        keep = rng.random(5) < 0.3
        ds.record_selection(batch, torch.from_numpy(keep))
        src, ids = batch["source_ids"].numpy(), batch["sample_ids"].numpy()
        np.add.at(seen, src, 1)
        np.add.at(kept, src[keep], 1)
        for s, i in zip(src[keep], ids[keep], strict=True):
            per_sample[s][i] += 1
    stats = ds.selection_stats()
    assert stats["seen"] == seen.sum()
    assert stats["kept"] == kept.sum()
    assert stats["keep_rate"] == pytest.approx(kept.sum() / seen.sum())
    for s, path in enumerate((a, b)):
        assert stats["sources"][s]["path"] == str(path)
        assert stats["sources"][s]["seen"] == seen[s]
        assert stats["sources"][s]["kept"] == kept[s]
        assert stats["sources"][s]["keep_rate"] == pytest.approx(kept[s] / seen[s])
    counts = ds.selection_counts()
    for s in range(2):
        assert counts[s]["kept"].tolist() == per_sample[s].tolist()
        assert counts[s]["offered"].sum() == seen[s]
    assert stats["reoffered"] == stats["pending"] == stats["dropped"] == 0  # re-offering off


@FAST
@given(
    reoffer=st.integers(0, 2),
    rows=st.integers(1, 3),
    capacity=st.integers(0, 8),
    keep=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_reoffered_samples_follow_the_rules(
    corpus: Path, reoffer: int, rows: int, capacity: int, keep: int, seed: int
) -> None:
    ds = tl.TokenDataset(
        corpus, seq_len=16, batch_size=4, mode="pack", seed=seed, ignore_index=-1,
        reoffer_unkept=reoffer, reoffer_rows=rows, reoffer_capacity=capacity,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    offers: dict[tuple[int, int], int] = {}
    content: dict[tuple[int, int], list[list[int]]] = {}
    done: set[tuple[int, int]] = set()
    total = kept_rows = queued = 0
    for cand in ds.candidates():
        n = cand["input_ids"].shape[0]
        before = cand["offered_before"].numpy()
        assert (before[:4] == 0).all()  # the fresh batch comes first
        assert n - 4 <= rows
        assert (before <= reoffer).all()
        kept = rng.permutation(n)[: min(keep, n)]
        for r in range(n):
            key = (int(cand["source_ids"][r]), int(cand["sample_ids"][r]))
            row = [cand[k][r].tolist() for k in ("input_ids", "labels", "doc_ids", "position_ids")]
            assert key not in done, "a kept sample came back"
            assert before[r] == offers.get(key, 0)
            assert content.setdefault(key, row) == row  # offered again as it was
            offers[key] = offers.get(key, 0) + 1
            if r in kept:
                done.add(key)
            elif before[r] < reoffer:
                queued += 1
        ds.record_selection(cand, torch.from_numpy(kept))
        total += n
        kept_rows += len(kept)
    stats = ds.selection_stats()
    assert stats["seen"] == total
    assert stats["kept"] == kept_rows
    assert stats["reoffered"] == sum(n - 1 for n in offers.values())
    assert queued == stats["reoffered"] + stats["pending"] + stats["dropped"]
    assert stats["pending"] <= capacity
    assert sum(c["offered"].sum() for c in ds.selection_counts()) == total


def run(ds: tl.TokenDataset, batches: Any, steps: int | None) -> list[dict[str, Any]]:
    out = []
    for cand in ds.candidates(batches):
        ds.record_selection(cand, toy_keep(cand, 2))
        out.append({k: v.clone() for k, v in cand.items()})
        if len(out) == steps:  # stop right after a step, where a checkpoint is taken
            break
    return out


def same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert sorted(x) == sorted(y)
        for k in x:
            assert torch.equal(x[k], y[k]), k


def roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf)  # type: ignore[no-any-return]


def test_resume_with_reoffers_is_exact(corpus: Path) -> None:
    def make_ds() -> tl.TokenDataset:
        return tl.TokenDataset(
            corpus, seq_len=16, batch_size=6, seed=3, reoffer_unkept=2, reoffer_rows=2
        )

    ds = make_ds()
    full = run(ds, None, None)
    full_stats, full_counts = ds.selection_stats(), ds.selection_counts()
    assert full_stats["reoffered"] > 0
    head_ds = make_ds()
    head = run(head_ds, None, 7)
    state = roundtrip(head_ds.state_dict())
    resumed = make_ds()
    resumed.load_state_dict(state)
    same(head + run(resumed, None, None), full)
    assert resumed.selection_stats() == full_stats
    for x, y in zip(resumed.selection_counts(), full_counts, strict=True):
        assert x["offered"].tolist() == y["offered"].tolist()
        assert x["kept"].tolist() == y["kept"].tolist()


def test_accounting_with_dataloader_workers_and_resume(corpus: Path) -> None:
    def make_ds() -> tl.TokenDataset:
        return tl.TokenDataset(corpus, seq_len=16, batch_size=4, seed=8, reoffer_unkept=1)

    single = make_ds()
    want = run(single, None, None)
    ds = make_ds()
    loader = DataLoader(ds, batch_size=None, num_workers=2)
    same(run(ds, loader, None), want)
    assert ds.selection_stats() == single.selection_stats()
    # resume after 5 candidate batches with another number of workers
    ds = make_ds()
    head = run(ds, DataLoader(ds, batch_size=None, num_workers=2), 5)
    state = roundtrip(ds.state_dict(consumed_batches=5))
    fresh = make_ds()
    fresh.load_state_dict(state)
    rest = run(fresh, DataLoader(fresh, batch_size=None, num_workers=1), None)
    same(head + rest, want)
    assert fresh.selection_stats() == single.selection_stats()


def test_bad_input(corpus: Path, tmp_path: Path) -> None:
    ds = tl.TokenDataset(corpus, seq_len=16, batch_size=4, outputs=("source_ids",))
    b = next(iter(ds))
    with pytest.raises(ValueError, match="lacks sample_ids"):
        ds.record_selection(b, [0])
    ds = tl.TokenDataset(corpus, seq_len=16, batch_size=4)
    b = next(iter(ds))
    with pytest.raises(ValueError, match="row 7 is out of range"):
        ds.record_selection(b, [1, 7])
    with pytest.raises(ValueError, match="more than once"):
        ds.record_selection(b, [1, 1])
    with pytest.raises(ValueError, match="row mask"):
        ds.record_selection(b, np.ones(3, bool))
    other = dict(b)
    other["sample_ids"] = b["sample_ids"] + 10_000
    with pytest.raises(ValueError, match="does not have"):
        ds.record_selection(other, [0])
    assert ds.selection_stats()["seen"] == 0  # nothing booked by a refused call
    with pytest.raises(ValueError, match="reoffer_unkept"):
        tl.TokenDataset(corpus, seq_len=16, batch_size=4, reoffer_unkept=-1)
    ds.record_selection(b, [0])
    state = ds.state_dict()
    small = tl.TokenDataset(corpus, seq_len=16, batch_size=4)
    state["selection"]["sample_offered"] = [torch.zeros(3, dtype=torch.int32)]
    with pytest.raises(ValueError, match="selection state counts samples"):
        small.load_state_dict(state)
