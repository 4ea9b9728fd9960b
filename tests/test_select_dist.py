"""Global selection across ranks (torch.distributed, gloo on CPU): the same global candidates
give the same selection, and the same memory on every rank, on any world size."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tokenloom as tl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

if TYPE_CHECKING:
    from pathlib import Path

GLOBAL = 12  # candidates per global step
KEEP = 5
STEPS = 6
SKETCH = (2, 3)
RULES = ("uds", "uds-greedy", "uds-scaled", "random")
SPLITS = {1: [12], 2: [5, 7], 4: [2, 4, 0, 6]}


def candidates() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    d = SKETCH[0] * SKETCH[1]
    return [
        (rng.random(GLOBAL, dtype=np.float32) * 5, rng.random((GLOBAL, d), dtype=np.float32) * 9)
        for _ in range(STEPS)
    ]


def logits() -> torch.Tensor:
    return torch.randn(GLOBAL, 6, 20, generator=torch.Generator().manual_seed(3)) * 2


def selector(rule: str, scope: str) -> tl.BatchSelector:
    return tl.BatchSelector(
        KEEP, buffer_size=7, alpha=0.3, sketch=SKETCH, seed=5, rule=rule, max_len=8, scope=scope
    )


def run_rank(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    split = SPLITS[world]
    a = sum(split[:rank])
    b = a + split[rank]
    result: dict[str, Any] = {}
    for rule in RULES:
        sel = selector(rule, "global")
        picks = []
        for u, z in candidates():
            local = sel.select_from(u[a:b], z[a:b])
            assert local.dtype == np.int64
            picks.append((local + a).tolist())
        x = logits()
        picks.append((sel.select(x[a:b]).numpy() + a).tolist())
        result[rule] = {"picks": picks, "memory": sel.state_dict()["rows"].tolist()}
    if world == 2:  # a bad input on one rank raises on every rank
        sel = selector("uds", "global")
        u, z = candidates()[0]
        z_bad = z[a:b, :4] if rank == 1 else z[a:b]
        try:
            sel.select_from(u[a:b], z_bad)
        except ValueError as e:
            result["error"] = str(e)
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


def reference(rule: str) -> dict[str, Any]:
    sel = selector(rule, "rank")
    picks = [sel.select_from(u, z).tolist() for u, z in candidates()]
    picks.append(sel.select(logits()).tolist())
    return {"picks": picks, "memory": sel.state_dict()["rows"].tolist()}


@pytest.mark.parametrize("world", [1, 2, 4])
def test_global_selection_is_the_same_on_any_world_size(world: int, tmp_path: Path) -> None:
    mp.spawn(
        run_rank,
        args=(world, f"file://{tmp_path}/rendezvous", str(tmp_path)),
        nprocs=world,
        join=True,
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]
    for rule in RULES:
        want = reference(rule)
        for step, kept in enumerate(want["picks"]):
            got = [i for r in ranks for i in r[rule]["picks"][step]]
            assert sorted(got) == sorted(kept), f"{rule} step {step}"
            assert len(got) == KEEP
            for r in ranks:  # each rank's rows keep the global best-first order
                mine = r[rule]["picks"][step]
                assert mine == [i for i in kept if i in mine]
        for r in ranks:  # identical memory on every rank, equal to the single-process one
            assert r[rule]["memory"] == want["memory"]
    if world == 2:
        assert "but 7 candidates of 6 floats" in ranks[1]["error"]
        assert "rank 1 gave candidates of the wrong shape" in ranks[0]["error"]


def test_without_torch_distributed_global_is_local() -> None:
    u, z = candidates()[0]
    assert not dist.is_initialized()
    got = selector("uds", "global").select_from(u, z).tolist()
    assert got == selector("uds", "rank").select_from(u, z).tolist()
    with pytest.raises(ValueError, match="scope"):
        tl.BatchSelector(2, scope="world")
