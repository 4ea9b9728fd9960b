"""Many ranks: ``torchrun --nproc-per-node 2`` (gloo, CPU) with 2 DataLoader workers per rank
reads every sample of an epoch exactly once, in the single-process stream's order; a run
stopped at step k continues the same global stream on another world size (2 -> 1, 1 -> 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tokenloom as tl
from conftest import run_ranks
from torch.utils.data import DataLoader

WORKER = Path(__file__).with_name("distributed_worker.py")
B = 2  # rows per rank and step; the global step holds B * world rows
Row = tuple[int, ...]


def rows_of(batch: dict[str, Any]) -> list[Row]:
    ids, labels = np.asarray(batch["input_ids"]), np.asarray(batch["labels"])
    return [(*ids[r].tolist(), int(labels[r, -1])) for r in range(ids.shape[0])]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Documents whose tokens are all distinct: a row identifies its sample."""
    path = tmp_path_factory.mktemp("dist") / "ds"
    rng = np.random.default_rng(8)
    with tl.DatasetWriter(path, "u32", eos_id=0, shard_bytes=512) as w:
        for d, n in enumerate(rng.integers(1, 50, size=90)):
            w.add([d * 1000 + i + 1 for i in range(int(n))])
    return path


def torchrun(world: int, corpus: Path, out: Path, stop: int, state: Path | None) -> dict[str, Any]:
    args = [str(corpus), str(out), str(B), str(stop), str(state) if state else "-"]
    run_ranks(WORKER, world, *args)
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def global_steps(report: dict[str, Any]) -> list[list[Row]]:
    """Step k of the global stream: rank 0's rows, then rank 1's, ..."""
    ranks = sorted(report["ranks"], key=lambda r: r["rank"])
    counts = {len(r["steps"]) for r in ranks}
    assert len(counts) == 1, "ranks read different numbers of batches"
    return [[tuple(row) for r in ranks for row in r["steps"][k]] for k in range(counts.pop())]


def single(corpus: Path, batch: int, **kw: Any) -> tl.TokenDataset:
    return tl.TokenDataset(corpus, seq_len=16, batch_size=batch, seed=5, rank=0, world_size=1, **kw)


def test_two_ranks_read_the_epoch_once_and_resume_on_one(corpus: Path, tmp_path: Path) -> None:
    reference = [rows_of(b) for b in single(corpus, 2 * B, output="numpy")]
    every = {r for b in single(corpus, 1, output="numpy") for r in rows_of(b)}
    k = 3
    report = torchrun(2, corpus, tmp_path / "out.json", stop=k, state=None)
    steps = global_steps(report)
    assert steps == reference  # the single-process stream, step by step
    flat = [r for s in steps for r in s]
    assert len(flat) == len(set(flat))  # no sample twice across ranks and workers
    assert set(flat) <= every
    assert len(flat) == len(every) // (2 * B) * (2 * B)  # all but the short last step

    # 2 -> 1: the state saved on 2 ranks after k steps, resumed by one process (2 workers)
    # with the same global batch: the rest of the same stream.
    ds = single(corpus, 2 * B)
    ds.load_state_dict(report["state"])
    rest = [rows_of(b) for b in DataLoader(ds, batch_size=None, num_workers=2)]
    assert rest == reference[k:]


def test_one_rank_stopped_resumes_on_two(corpus: Path, tmp_path: Path) -> None:
    reference = [rows_of(b) for b in single(corpus, 2 * B, output="numpy")]
    k = 4
    ds = single(corpus, 2 * B)
    head = []
    for b in DataLoader(ds, batch_size=None, num_workers=2):
        head.append(rows_of(b))
        if len(head) == k:
            break
    state = tmp_path / "state.json"
    state.write_text(json.dumps(ds.state_dict(consumed_batches=k)))
    report = torchrun(2, corpus, tmp_path / "out.json", stop=0, state=state)
    assert head + global_steps(report) == reference
