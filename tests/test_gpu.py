"""GPU feeding: pinned batches and the side-stream prefetcher (run where CUDA is present)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
import tokenloom as tl
import torch
from torch.utils.data import DataLoader

if TYPE_CHECKING:
    from pathlib import Path

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    with tl.DatasetWriter(tmp_path / "g", "u16", eos_id=0) as w:
        for n in rng.integers(1, 300, size=400):
            w.add(rng.integers(1, 60000, size=int(n)))
    return tmp_path / "g"


def test_prefetcher_on_cpu_passes_batches_through(corpus: Path) -> None:
    ds = tl.TokenDataset(corpus, seq_len=64, batch_size=4, seed=1)
    want = [b["input_ids"] for b in ds]
    ds.set_epoch(0)
    got = [b["input_ids"] for b in tl.DevicePrefetcher(ds, "cpu")]
    assert len(got) == len(want)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


@cuda
def test_pinned_batches_and_side_stream_copy(corpus: Path) -> None:
    ds = tl.TokenDataset(corpus, seq_len=64, batch_size=4, seed=1, pin_memory=True)
    first = next(iter(ds))
    assert all(t.is_pinned() for t in first.values())
    ds.set_epoch(0)
    want = [b["input_ids"].clone() for b in ds]
    ds.set_epoch(0)
    loader = DataLoader(ds, batch_size=None, num_workers=2, pin_memory=True)
    got = []
    for b in tl.DevicePrefetcher(loader, "cuda"):
        assert b["input_ids"].device.type == "cuda"
        got.append((b["input_ids"] * 1).cpu())  # compute on the default stream
    assert len(got) == len(want)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


@cuda
def test_to_device_moves_every_tensor(corpus: Path) -> None:
    ds = tl.TokenDataset(corpus, seq_len=32, batch_size=2, pin_memory=True)
    b = tl.to_device(next(iter(ds)), "cuda")
    assert {t.device.type for t in b.values()} == {"cuda"}
    torch.cuda.synchronize()
