"""SelectionTrainer under ``torchrun --nproc-per-node 2`` (gloo, CPU) on a tiny random GPT-2: ranks
read disjoint candidate batches covering the epoch, DDP keeps the replicas equal, the training
equals one process stepping on the rows all ranks kept, global selection equals one process
selecting from the concatenated candidates, and a resumed run continues the uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tokenloom as tl
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from conftest import run_ranks
from hf_worker import BATCH, KEEP, LR, VOCAB, dataset, selector, tiny_gpt2

WORKER = Path(__file__).with_name("hf_worker.py")
SAVE = 3  # the checkpoint a run is resumed from
Report = list[dict[str, Any]]  # one per rank, in rank order


def torchrun(corpus: Path, out: Path, scope: str, save: int, resume: Path | None) -> Report:
    args = [str(corpus), str(out), scope, str(save), str(resume) if resume else "-"]
    run_ranks(WORKER, 2, *args)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hfdist") / "c"
    rng = np.random.default_rng(0)
    with tl.DatasetWriter(path, "u16", eos_id=0, vocab_size=VOCAB) as w:
        for n in rng.integers(5, 60, size=60):
            w.add(rng.integers(1, VOCAB, size=int(n)))
    return path


@pytest.fixture(scope="module")
def runs(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Report]]:
    """One epoch per selection scope (scope "rank" checkpointed every SAVE steps)."""
    out = {}
    for scope, save in (("rank", SAVE), ("global", 0)):
        path = tmp_path_factory.mktemp(scope)
        out[scope] = (path, torchrun(corpus, path, scope, save, None))
    return out


def kept_samples(report: Report) -> list[list[int]]:
    """Per step, the sample ids all ranks kept (rank 0's, then rank 1's)."""
    steps = len(report[0]["batches"])
    return [
        [b["samples"][i] for r in report for b in [r["batches"][k]] for i in b["kept"]]
        for k in range(steps)
    ]


def test_ranks_read_disjoint_candidates_covering_the_epoch(
    corpus: Path, runs: dict[str, tuple[Path, Report]]
) -> None:
    # the single-process stream of steps of 2 x BATCH rows: what the two ranks must share out
    stream = [
        b["sample_ids"].tolist()
        for b in dataset(str(corpus), batch_size=2 * BATCH, rank=0, world_size=1)
    ]
    assert len(stream) == 7
    for _, report in runs.values():
        assert [r["global_step"] for r in report] == [len(stream)] * 2
        fresh = [
            [
                s
                for r in report
                for s, f in zip(r["batches"][k]["samples"], r["batches"][k]["fresh"], strict=True)
                if f
            ]
            for k in range(len(stream))
        ]
        assert fresh == stream  # neither sharded again nor duplicated by the Trainer
        assert not all(f for r in report for b in r["batches"] for f in b["fresh"])  # re-offers


def replay(report: Report, scope: str) -> torch.nn.Module:
    """One process: scores each rank's candidates with the current model (checked against
    what the rank recorded), selects from those scores as the ranks should have (checked
    against what they kept), then takes one SGD step on the rows all ranks kept."""
    model = tiny_gpt2()
    sels = [selector(scope)] if scope == "global" else [selector(scope) for _ in report]
    for k in range(len(report[0]["batches"])):
        batches = [r["batches"][k] for r in report]
        for b in batches:
            with torch.no_grad():
                logits = model(input_ids=torch.tensor(b["input_ids"])).logits
            utility, sketches = sels[0].scores(logits, torch.tensor(b["mask"]))
            torch.testing.assert_close(utility, torch.tensor(b["utility"]), rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(sketches, torch.tensor(b["sketches"]), rtol=1e-3, atol=1e-3)
        if scope == "global":
            kept = sels[0].select_from(
                np.concatenate([b["utility"] for b in batches]),
                np.concatenate([b["sketches"] for b in batches]),
            )
            sizes = np.cumsum([0] + [len(b["samples"]) for b in batches])
            for r, b in enumerate(batches):
                mine = kept[(kept >= sizes[r]) & (kept < sizes[r + 1])] - sizes[r]
                assert mine.tolist() == b["kept"]
            assert sum(len(b["kept"]) for b in batches) == KEEP
        else:
            for sel, b in zip(sels, batches, strict=True):
                assert sel.select_from(b["utility"], b["sketches"]).tolist() == b["kept"]
        ids = torch.cat([torch.tensor(b["input_ids"])[b["kept"]] for b in batches])
        labels = torch.cat([torch.tensor(b["labels"])[b["kept"]] for b in batches])
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1))
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= LR * p.grad
    return model


@pytest.mark.parametrize("scope", ["rank", "global"])
def test_ranks_train_like_one_process_on_the_kept_rows(
    scope: str, runs: dict[str, tuple[Path, Report]]
) -> None:
    path, report = runs[scope]
    assert report[0]["params"] == report[1]["params"]  # replicas bit for bit equal
    trained = torch.load(path / "params0.pt")
    start = {n: p.detach() for n, p in tiny_gpt2().named_parameters()}
    model = replay(report, scope)
    for name, p in model.named_parameters():
        torch.testing.assert_close(trained[name], p, rtol=1e-4, atol=1e-5)
    moved = max(float((trained[n] - start[n]).abs().max()) for n in start)
    assert moved > 1e-2  # the comparison is not one of untouched parameters


@pytest.mark.parametrize("scope", ["rank", "global"])
def test_selection_stats_count_each_ranks_candidates(
    scope: str, runs: dict[str, tuple[Path, Report]]
) -> None:
    _, report = runs[scope]
    for r in report:
        stats, batches = r["stats"], r["batches"]
        assert stats["seen"] == sum(len(b["samples"]) for b in batches)
        assert stats["kept"] == sum(len(b["kept"]) for b in batches)
        assert stats["reoffered"] == sum(len(b["fresh"]) - sum(b["fresh"]) for b in batches)
        if scope == "rank":
            assert stats["kept"] == KEEP * r["global_step"]
    if scope == "global":
        assert sum(r["stats"]["kept"] for r in report) == KEEP * report[0]["global_step"]
        # ranks kept unevenly: at some steps all of the rows on one rank, none on the other
        assert {len(b["kept"]) for r in report for b in r["batches"]} == {0, 1, 2}


def test_resumed_run_continues_the_uninterrupted_one(
    corpus: Path, runs: dict[str, tuple[Path, Report]], tmp_path: Path
) -> None:
    path, whole = runs["rank"]
    resumed = torchrun(corpus, tmp_path, "rank", 0, path / "run" / f"checkpoint-{SAVE}")
    assert kept_samples(resumed) == kept_samples(whole)[SAVE:]
    for a, b in zip(whole, resumed, strict=True):
        assert b["batches"] == a["batches"][SAVE:]  # same candidates, re-offers, scores, picks
        assert b["stats"] == a["stats"]  # the accounting carried over
        assert b["params"] == a["params"]
