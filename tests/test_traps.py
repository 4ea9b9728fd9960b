"""Every way of plugging the loader in that once gave a silently wrong result, one test each:
it now works exactly, or fails loudly naming the right way.

1. State after a DataLoader with workers: refused without a count; exact through
   ``tl.DataLoader`` (any ``num_workers``).
2. Epochs with workers: ``tl.DataLoader`` advances them as in-process iteration does; a
   plain DataLoader pass that would repeat one raises.
3. ``DevicePrefetcher``: its state (and the dataset's meanwhile) is after the batches the
   trainer received, not the one it holds ahead; without CUDA it says so.
4. Hugging Face ``Trainer``: ``TrainerRows`` shifts labels exactly once; a ``TokenDataset``
   given to it directly fails at the first batch naming ``TrainerRows``.
5. ``tl.build(workers=2)`` from a script without the ``__main__`` guard fails at once,
   before writing anything, instead of hanging or building twice.
6. An order used with another ``seq_len`` than it was made for warns, stating the consequence.
7. A DataLoader that batches (``batch_size`` not ``None``) fails at the first batch, naming
   ``batch_size=None``.
8. A damaged or foreign state fails at ``load_state_dict``, naming the field.
9. Small edges: numpy dtypes in ``DatasetWriter``; ``order_report`` JSON-safe with a summary
   line naming near-duplicates; a missing optional package named before ``.parts/`` exists.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tokenloom as tl
import torch
from torch.utils.data import DataLoader

if TYPE_CHECKING:
    from pathlib import Path

Row = tuple[int, ...]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Documents whose tokens are all distinct, so that a row identifies its sample."""
    rng = np.random.default_rng(7)
    with tl.DatasetWriter(tmp_path / "c", "u32", eos_id=0, shard_bytes=512) as w:
        for d, n in enumerate(rng.integers(1, 50, size=70)):
            w.add([d * 1000 + i + 1 for i in range(int(n))])
    return tmp_path / "c"


@pytest.fixture
def words(tmp_path: Path) -> Path:
    """Documents over a small vocabulary (shared tokens: something to order them by)."""
    rng = np.random.default_rng(8)
    with tl.DatasetWriter(tmp_path / "w", "u16", eos_id=0) as w:
        for n in rng.integers(5, 60, size=60):
            w.add(rng.integers(1, 300, size=int(n)))
    return tmp_path / "w"


def dataset(corpus: Path, **kw: Any) -> tl.TokenDataset:
    return tl.TokenDataset(corpus, seq_len=16, **{"batch_size": 3, "seed": 11, **kw})


def rows(batches: Any) -> list[Row]:
    out = []
    for b in batches:
        ids, labels = np.asarray(b["input_ids"]), np.asarray(b["labels"])
        out += [(*ids[r].tolist(), int(labels[r, -1])) for r in range(ids.shape[0])]
    return out


def take(batches: Any, k: int) -> list[Row]:
    head = []
    for i, b in enumerate(batches):
        head.append(b)
        if i + 1 == k:
            break
    return rows(head)


def epochs(corpus: Path, n: int) -> list[list[Row]]:
    """The reference: ``n`` passes over the dataset in this process."""
    ds = dataset(corpus)
    return [rows(ds) for _ in range(n)]


# 1 -------------------------------------------------------------------------------------------


def test_state_after_plain_dataloader_workers_is_refused_not_position_zero(corpus: Path) -> None:
    ds = dataset(corpus)
    take(DataLoader(ds, batch_size=None, num_workers=2), 5)
    with pytest.raises(ValueError, match=r"tl\.DataLoader.*consumed_batches"):
        ds.state_dict()
    # the count from the trainer's side is exact
    resumed = dataset(corpus)
    resumed.load_state_dict(ds.state_dict(consumed_batches=5))
    assert rows(resumed) == epochs(corpus, 1)[0][5 * 3 :]


@pytest.mark.parametrize(("before", "after"), [(2, 0), (0, 2), (2, 1)])
def test_tl_dataloader_state_is_exact_with_any_num_workers(
    corpus: Path, before: int, after: int
) -> None:
    whole = epochs(corpus, 2)
    loader = tl.DataLoader(dataset(corpus), num_workers=before)
    head = take(loader, 4)
    state = loader.state_dict()
    assert loader.dataset.state_dict() == state
    again = tl.DataLoader(dataset(corpus), num_workers=after)
    again.load_state_dict(json.loads(json.dumps(state)))
    assert head + rows(again) == whole[0]
    assert rows(again) == whole[1]  # the pass after the end of the epoch is the next epoch


# 2 -------------------------------------------------------------------------------------------


def test_tl_dataloader_epochs_advance_as_in_process(corpus: Path) -> None:
    want = epochs(corpus, 3)
    assert want[0] != want[1] != want[2]
    loader = tl.DataLoader(dataset(corpus), num_workers=2)
    assert [rows(loader) for _ in range(3)] == want
    # a pass stopped early is continued by the next one, as in process
    loader = tl.DataLoader(dataset(corpus), num_workers=2)
    assert take(loader, 2) + rows(loader) == want[0]


def test_plain_dataloader_pass_that_would_repeat_an_epoch_raises(corpus: Path) -> None:
    want = epochs(corpus, 2)
    ds = dataset(corpus)
    loader = DataLoader(ds, batch_size=None, num_workers=2)
    assert rows(loader) == want[0]
    with pytest.raises(RuntimeError, match=r"ds\.set_epoch\(epoch\)"):
        rows(loader)
    ds.set_epoch(1)  # the named fix
    assert rows(loader) == want[1]
    persistent = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    ds.set_epoch(0)
    assert rows(persistent) == want[0]
    ds.set_epoch(1)  # does not reach the persistent workers' copies: refused, not ignored
    with pytest.raises(RuntimeError, match="persistent_workers"):
        rows(persistent)


def test_ranks_without_drop_last_all_move_to_the_next_epoch(corpus: Path) -> None:
    """With drop_last=False, a rank past the end of the short last step is done with the
    epoch too: its next pass is the next epoch, not an empty one."""
    per_rank = []
    for rank in range(2):
        ds = dataset(corpus, rank=rank, world_size=2, drop_last=False, batch_size=4)
        per_rank.append([rows(ds) for _ in range(2)])
        fresh = dataset(corpus, rank=rank, world_size=2, drop_last=False, batch_size=4)
        fresh.set_epoch(1)
        assert per_rank[-1][1] == rows(fresh)
    assert all(passes[1] for passes in per_rank)


# 3 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["dataset", "dataloader", "tl.DataLoader", "workers"])
def test_device_prefetcher_state_is_after_the_batches_the_trainer_has(
    corpus: Path, source: str
) -> None:
    want = epochs(corpus, 1)[0]
    ds = dataset(corpus)
    batches: Any = {
        "dataset": ds,
        "dataloader": DataLoader(ds, batch_size=None),
        "tl.DataLoader": tl.DataLoader(ds, num_workers=2),
        "workers": DataLoader(ds, batch_size=None, num_workers=2),
    }[source]
    pref = tl.DevicePrefetcher(batches, "cpu")
    head = []
    for b in pref:
        head.append(b)
        if len(head) == 4:
            state = pref.state_dict()
            if source == "workers":  # the plain DataLoader's workers: only the count knows
                with pytest.raises(ValueError, match=r"tl\.DataLoader"):
                    ds.state_dict()
            else:
                assert ds.state_dict() == state
            break
    resumed = dataset(corpus)
    resumed.load_state_dict(state)
    assert rows(head) + rows(resumed) == want


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message on a machine without CUDA"
)
def test_device_prefetcher_without_cuda_says_so(corpus: Path) -> None:
    with pytest.raises(RuntimeError, match=r"CUDA.*device='cpu'"):
        tl.DevicePrefetcher(dataset(corpus), "cuda")


# 4 -------------------------------------------------------------------------------------------


def tiny_trainer(train: Any, out: Path, **kw: Any) -> Any:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=300, n_positions=16, n_embd=8, n_layer=1, n_head=1,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    args = transformers.TrainingArguments(
        output_dir=str(out), use_cpu=True, report_to=[], disable_tqdm=True, save_strategy="no",
        learning_rate=0.0, **{"per_device_train_batch_size": 4, **kw},
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(cfg)
    return transformers.Trainer(model=model, args=args, train_dataset=train)


def test_trainer_given_a_token_dataset_fails_at_the_first_batch(
    words: Path, tmp_path: Path
) -> None:
    trainer = tiny_trainer(dataset(words), tmp_path, max_steps=2)
    with pytest.raises(TypeError, match=r"batch_size=None.*tokenloom\.hf\.TrainerRows"):
        trainer.train()


def test_trainer_rows_are_shifted_exactly_once(words: Path, tmp_path: Path) -> None:
    from tokenloom.hf import TrainerRows

    ds = dataset(words, ignore_index=-1, batch_size=8)
    reference = list(dataset(words, ignore_index=-1, batch_size=8))  # the loader's view
    trainer = tiny_trainer(TrainerRows(ds), tmp_path, max_steps=4)
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def record(module: Any, args: Any, kw: dict[str, Any], out: Any) -> None:
        seen.append((kw["input_ids"], kw["labels"], out.loss.detach()))

    hook = trainer.model.register_forward_hook(record, with_kwargs=True)
    trainer.train()
    hook.remove()
    ids = torch.cat([b["input_ids"] for b in reference])[:16]
    next_tokens = torch.cat([b["labels"] for b in reference])[:16]  # already the next tokens
    got_ids = torch.cat([s[0] for s in seen])
    assert torch.equal(got_ids, ids)
    for (inputs, _, loss), start in zip(seen, range(0, 16, 4), strict=True):
        logits = trainer.model(input_ids=inputs).logits
        # position t predicts the loader's label t (the token at t + 1); the row's last
        # label has no position left in transformers' convention
        want = next_tokens[start : start + 4, :-1].masked_fill(
            next_tokens[start : start + 4, :-1] == -1, -100
        )
        expected = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), want.reshape(-1), ignore_index=-100
        )
        torch.testing.assert_close(loss, expected)


def test_trainer_rows_advance_epochs_with_dataloader_workers(words: Path, tmp_path: Path) -> None:
    """Two epochs with 2 DataLoader workers: the Trainer's set_epoch reaches the dataset, so
    the second epoch is the stream's epoch 1, not epoch 0 again."""
    from tokenloom.hf import TrainerRows

    ds = dataset(words, batch_size=8)
    rows_per_epoch = len(TrainerRows(ds))
    trainer = tiny_trainer(
        TrainerRows(ds), tmp_path, num_train_epochs=2, dataloader_num_workers=2,
        per_device_train_batch_size=8,
    )  # fmt: skip
    seen: list[torch.Tensor] = []
    trainer.model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw["input_ids"]), with_kwargs=True
    )
    trainer.train()
    got = torch.cat(seen)
    reference = dataset(words, batch_size=8)
    want = [torch.cat([b["input_ids"] for b in reference]) for _ in range(2)]
    assert rows_per_epoch == len(want[0])
    # workers interleave their batches; each epoch is its own rows, each once
    for e in range(2):
        part = got[e * rows_per_epoch : (e + 1) * rows_per_epoch]
        assert sorted(map(tuple, part.tolist())) == sorted(map(tuple, want[e].tolist()))
    assert not torch.equal(want[0], want[1])


# 5 -------------------------------------------------------------------------------------------

SCRIPT = """
import tokenloom as tl
kw = dict(token_field="ids", vocab_size=100, eos_id=0, progress=False)
{body}
"""


def run_script(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    for i in range(3):
        (tmp_path / f"in{i}.jsonl").write_text(json.dumps({"ids": [1, 2, i + 3]}) + "\n")
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(body=textwrap.dedent(body)))
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


def test_build_with_workers_from_an_unguarded_script_fails_before_writing(tmp_path: Path) -> None:
    proc = run_script(
        tmp_path, 'tl.build(["in0.jsonl", "in1.jsonl", "in2.jsonl"], out="out", workers=2, **kw)'
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "script.py, line 4" in last
    assert 'if __name__ == "__main__":' in last
    assert not (tmp_path / "out").exists()


def test_build_in_a_starting_worker_process_is_refused(tmp_path: Path) -> None:
    """An unguarded build before a guarded one with workers: the worker processes would run
    it again as they start, beside the main process's build."""
    proc = run_script(
        tmp_path,
        """
        tl.build(["in0.jsonl"], out="first", **kw)
        if __name__ == "__main__":
            tl.build(["in1.jsonl", "in2.jsonl"], out="second", workers=2, **kw)
        """,
    )
    assert proc.returncode == 1
    assert "tl.build was called while a worker process started" in proc.stderr
    assert 'lacks `if __name__ == "__main__":`' in proc.stderr.strip().splitlines()[-1]


# 6 -------------------------------------------------------------------------------------------


def test_order_used_with_another_seq_len_warns(words: Path) -> None:
    tl.order(words, seq_len=32, k=3, progress=False)
    with pytest.warns(UserWarning, match=r"made for seq_len=32.*seq_len=16.*tl\.order"):
        tl.TokenDataset(words, seq_len=16, batch_size=2, order="iclm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tl.TokenDataset(words, seq_len=32, batch_size=2, order="iclm")


# 7 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("batch_size", "workers"), [(1, 0), (8, 0), (1, 2)])
def test_dataloader_that_batches_fails_at_the_first_batch(
    corpus: Path, batch_size: int, workers: int
) -> None:
    loader = DataLoader(dataset(corpus), batch_size=batch_size, num_workers=workers)
    with pytest.raises(TypeError, match=r"batch_size=None"):
        next(iter(loader))
    with pytest.raises(ValueError, match=r"batch_size=None"):
        tl.DataLoader(dataset(corpus), batch_size=batch_size)


# 8 -------------------------------------------------------------------------------------------


def test_bad_states_fail_at_load_naming_the_field(corpus: Path) -> None:
    ds = dataset(corpus)
    take(ds, 2)
    good = ds.state_dict()
    n = ds.samples_per_epoch
    cases = {
        "epoch": [-1, 1.0, "0", 2**64 - 1, 2**64, None, True],
        "position": [-3, n, n + 5, 2.5, "7"],
        "counts": [[-1], [1.5], "6", [6, 0], [7]],
        "fingerprint": [12],
        "worker": [{"id": 2, "num_workers": 2, "batches": 0}, {"id": -1, "num_workers": 2}],
    }
    for field, values in cases.items():
        for value in values:
            bad = {**good, field: value}
            # the message is about that field (it begins with its name)
            with pytest.raises(ValueError, match=rf"^(invalid )?{field}\b"):
                dataset(corpus).load_state_dict(bad)
    with pytest.raises(ValueError, match=r"^epoch\b"):
        ds.set_epoch(-1)
    with pytest.raises(ValueError, match=r"^consumed_batches\b"):
        ds.state_dict(consumed_batches=-1)


# 9 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint16, np.dtype("uint32"), "uint16", "<u2", "u32"])
def test_dataset_writer_accepts_numpy_dtypes(tmp_path: Path, dtype: Any) -> None:
    with tl.DatasetWriter(tmp_path / "d", dtype) as w:
        w.add([1, 2, 3])
    want = "uint16" if np.dtype(dtype if dtype != "u32" else "u4").itemsize == 2 else "uint32"
    assert tl.open_dataset(tmp_path / "d").dtype == want
    with pytest.raises(ValueError, match="u16"):
        tl.DatasetWriter(tmp_path / "e", np.int64)


def test_order_report_is_json_safe_with_a_summary_line(words: Path) -> None:
    docs = tl.open_dataset(words)
    with tl.DatasetWriter(words.parent / "dup", "u16", eos_id=0) as w:
        for i in range(len(docs)):
            w.add(docs[i])
        w.add(docs[3])  # an exact duplicate
    made = tl.order(words.parent / "dup", seq_len=32, k=3, progress=False)
    report = tl.order_report(words.parent / "dup")
    assert json.loads(json.dumps(report)) == report
    for rep in (made, report):
        first = rep["text"].splitlines()[0]
        assert f"{rep['duplicates']} near-duplicates left out" in first
    assert report["duplicates"] >= 1
    assert sorted(report["docs_in_order"]) == sorted(
        set(range(len(docs) + 1)) - {d for d, _, _ in report["duplicate_pairs"]}
    )


@pytest.mark.parametrize(
    ("module", "name", "inputs"),
    [
        ("pyarrow", "x.parquet", None),
        ("zstandard", "x.jsonl.zst", None),
        ("tokenizers", "x.jsonl", "tok.json"),
    ],
)
def test_missing_optional_package_is_one_line_before_any_part(
    tmp_path: Path, module: str, name: str, inputs: str | None
) -> None:
    (tmp_path / name).write_bytes(b"")
    tok = "None" if inputs is None else repr(inputs)
    code = f"""
import sys
sys.modules[{module!r}] = None
import tokenloom as tl
tl.build([{name!r}], out="out", tokenizer={tok}, token_field=None if {tok} else "ids",
         vocab_size=100, eos_id=0, progress=False)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError:")
    assert module in last
    assert "pip install 'tokenloom[build]'" in last
    assert not (tmp_path / "out").exists()
