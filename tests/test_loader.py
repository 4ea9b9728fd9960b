"""TokenDataset: plans, outputs, shuffling, sharding, resumption, mixing, bad input."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tokenloom as tl
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

if TYPE_CHECKING:
    from pathlib import Path

FAST = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def unique_docs(lengths: list[int], base: int = 0) -> list[list[int]]:
    """Documents whose tokens are all distinct: token i of doc d is (base + d) * 1000 + i + 1."""
    return [[(base + d) * 1000 + i + 1 for i in range(n)] for d, n in enumerate(lengths)]


def make(path: Path, lengths: list[int], base: int = 0) -> Path:
    with tl.DatasetWriter(path, "u32", eos_id=0, shard_bytes=400) as w:
        for doc in unique_docs(lengths, base):
            w.add(doc)
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    return make(tmp_path / "c", rng.integers(1, 60, size=80).tolist())


def rows(batches: list[dict[str, Any]]) -> list[tuple[int, ...]]:
    """Each row of each batch as (input tokens..., last label): identifies a sample."""
    out = []
    for b in batches:
        ids, labels = np.asarray(b["input_ids"]), np.asarray(b["labels"])
        out += [(*ids[r].tolist(), int(labels[r, -1])) for r in range(ids.shape[0])]
    return out


def epoch(ds: tl.TokenDataset) -> list[dict[str, Any]]:
    return list(ds)


def test_concat_epoch_is_every_window_once(corpus: Path) -> None:
    seq = 16
    ds = tl.TokenDataset(corpus, seq_len=seq, batch_size=4, output="numpy", seed=1)
    stream = np.concatenate([np.asarray(tl.open_dataset(corpus)[i]) for i in range(80)])
    n = (len(stream) - 1) // seq
    want = Counter(tuple(stream[i * seq : i * seq + seq + 1].tolist()) for i in range(n))
    got = rows(epoch(ds))
    assert len(got) == n // 4 * 4
    assert set(got) <= set(want)
    assert len(set(got)) == len(got)
    ds_all = tl.TokenDataset(corpus, seq_len=seq, batch_size=1, output="numpy", seed=1)
    assert Counter(rows(epoch(ds_all))) == want


def test_outputs_are_consistent(corpus: Path) -> None:
    ds = tl.TokenDataset(corpus, seq_len=32, batch_size=3, mode="pack", ignore_index=-1)
    b = next(iter(ds))
    assert set(b) == {
        "input_ids",
        "labels",
        "position_ids",
        "doc_ids",
        "cu_seqlens",
        "source_ids",
        "sample_ids",
    }
    assert b["input_ids"].dtype == torch.int64
    assert b["input_ids"].shape == (3, 32)
    assert b["cu_seqlens"].dtype == torch.int32
    docs = tl.open_dataset(corpus)
    ids, labels, pos, doc = (
        b[k].numpy() for k in ("input_ids", "labels", "position_ids", "doc_ids")
    )
    cu = b["cu_seqlens"].numpy()
    assert cu[0] == 0
    assert cu[-1] == ids.size
    for r in range(3):
        for c in range(32):
            d = doc[r, c]
            if d < 0:  # padding
                assert labels[r, c] == -1
                continue
            # tokens are d * 1000 + offset + 1: the piece is consecutive tokens of doc d,
            # and its positions count from 0 at the piece start
            offset = ids[r, c] - d * 1000 - 1
            assert docs[d][offset] == ids[r, c]
            if pos[r, c] > 0:
                assert doc[r, c - 1] == d
                assert ids[r, c - 1] == ids[r, c] - 1
                assert pos[r, c - 1] == pos[r, c] - 1
            nxt_same_doc = c + 1 < 32 and doc[r, c + 1] == d
            if nxt_same_doc:
                assert labels[r, c] == ids[r, c + 1]
    # cu_seqlens boundaries are exactly where doc_ids change (padding is one piece)
    flat = doc.reshape(-1)
    changes = [i for i in range(1, flat.size) if flat[i] != flat[i - 1] or i % 32 == 0]
    assert cu.tolist() == [0, *changes, flat.size]


def test_int32_and_numpy_output(corpus: Path) -> None:
    ds = tl.TokenDataset(corpus, seq_len=8, batch_size=2, dtype="int32", output="numpy")
    b = next(iter(ds))
    assert isinstance(b["input_ids"], np.ndarray)
    assert b["input_ids"].dtype == np.int32
    assert b["labels"].dtype == np.int32


def test_outputs_leave_out_arrays_and_change_nothing_else(corpus: Path) -> None:
    full = tl.TokenDataset(corpus, seq_len=16, batch_size=3, mode="pack", seed=4)
    lean = tl.TokenDataset(
        corpus, seq_len=16, batch_size=3, mode="pack", seed=4, outputs=("cu_seqlens",)
    )
    assert lean.fingerprint == full.fingerprint  # same stream: states are interchangeable
    for a, b in zip(epoch(full), epoch(lean), strict=True):
        assert sorted(b) == ["cu_seqlens", "input_ids", "labels"]
        for k in b:
            assert torch.equal(a[k], b[k])
    loader = DataLoader(
        tl.TokenDataset(corpus, seq_len=16, batch_size=3, seed=4, outputs=()),
        batch_size=None,
        num_workers=2,
    )
    assert all(sorted(b) == ["input_ids", "labels"] for b in loader)
    with pytest.raises(ValueError, match="outputs"):
        tl.TokenDataset(corpus, seq_len=16, batch_size=3, outputs=("attention_mask",))
    with pytest.raises(ValueError, match="outputs"):
        tl.TokenDataset(corpus, seq_len=16, batch_size=3, outputs="doc_ids")


def test_pack_covers_every_document_token(corpus: Path) -> None:
    ds = tl.TokenDataset(corpus, seq_len=24, batch_size=1, mode="pack", output="numpy")
    seen: Counter[int] = Counter()
    for b in ds:
        ids, labels, doc = b["input_ids"][0], b["labels"][0], b["doc_ids"][0]
        seen.update(ids[doc >= 0].tolist())
        # the row's last token only shows up as the last label
        last = labels[-1]
        if last != -100 and doc[-1] >= 0:
            seen[int(last)] += 1
    docs = tl.open_dataset(corpus)
    want = Counter(t for i in range(len(docs)) for t in docs[i].tolist())
    assert seen == want


def test_epochs_reshuffle_and_no_shuffle_is_in_order(corpus: Path) -> None:
    ds = tl.TokenDataset(corpus, seq_len=8, batch_size=2, output="numpy", seed=5)
    e0, e1 = rows(epoch(ds)), rows(epoch(ds))
    assert ds.epoch == 2
    assert sorted(e0) == sorted(e1)
    assert e0 != e1
    plain = tl.TokenDataset(corpus, seq_len=8, batch_size=2, output="numpy", shuffle=False)
    firsts = [r[0] for r in rows(epoch(plain))]
    assert firsts == sorted(firsts)
    other_seed = tl.TokenDataset(corpus, seq_len=8, batch_size=2, output="numpy", seed=6)
    assert rows(epoch(other_seed)) != e0


@FAST
@given(world=st.integers(1, 4), batch=st.integers(1, 5), drop_last=st.booleans())
def test_ranks_partition_the_epoch(corpus: Path, world: int, batch: int, drop_last: bool) -> None:
    single = rows(epoch(tl.TokenDataset(corpus, seq_len=16, batch_size=1, output="numpy")))
    per_rank = [
        rows(
            epoch(
                tl.TokenDataset(
                    corpus,
                    seq_len=16,
                    batch_size=batch,
                    output="numpy",
                    rank=r,
                    world_size=world,
                    drop_last=drop_last,
                )
            )
        )
        for r in range(world)
    ]
    union = [x for part in per_rank for x in part]
    step = batch * world
    expected = len(single) // step * step if drop_last else len(single)
    assert len(union) == expected
    assert len(set(union)) == len(union)
    assert set(union) <= set(single)
    if drop_last:
        assert len({len(p) for p in per_rank}) == 1  # every rank the same number of batches


@FAST
@given(
    seed=st.integers(0, 2**32),
    stop=st.integers(0, 12),
    world_before=st.integers(1, 3),
    world_after=st.integers(1, 3),
    batch=st.integers(1, 4),
    window=st.sampled_from([0, 16, 50]),
)
def test_resume_is_exact_also_with_another_world_size(
    corpus: Path, seed: int, stop: int, world_before: int, world_after: int, batch: int,
    window: int,
) -> None:  # fmt: skip
    def make_ds(rank: int, world: int) -> tl.TokenDataset:
        return tl.TokenDataset(
            corpus, seq_len=16, batch_size=batch, output="numpy", seed=seed, rank=rank,
            world_size=world, shuffle_window=window,
        )  # fmt: skip

    # Same world size, in-process: continuing from state_dict() gives the same stream.
    ds = make_ds(0, 1)
    full = rows(epoch(make_ds(0, 1)))
    it = iter(ds)
    head = [next(it) for _ in range(min(stop, len(full) // batch))]
    state = ds.state_dict()
    resumed = make_ds(0, 1)
    resumed.load_state_dict(state)
    assert rows(head) + rows(epoch(resumed)) == full

    # Elastic: `stop` steps on world_before ranks, then the rest on world_after ranks.
    # Together they read each sample of the epoch at most once and, apart from the
    # short tails dropped at the end, all of them.
    before = [make_ds(r, world_before) for r in range(world_before)]
    steps = min(stop, len(before[0]) - 1)  # stop inside the epoch
    seen = []
    for d in before:
        it = iter(d)
        seen += rows([next(it) for _ in range(steps)])
    state = before[0].state_dict(consumed_batches=steps)
    assert state["epoch"] == 0
    after = [make_ds(r, world_after) for r in range(world_after)]
    for d in after:
        d.load_state_dict(state)
        seen += rows(epoch(d))
    assert len(set(seen)) == len(seen)
    # Exactly the stream's first samples: `steps` global steps of world_before ranks, then
    # every full global step of world_after ranks left in the epoch (no step skipped).
    stream = rows(epoch(tl.TokenDataset(
        corpus, seq_len=16, batch_size=1, output="numpy", seed=seed,
        shuffle_window=window)))  # fmt: skip
    head = steps * batch * world_before
    tail = (len(stream) - head) // (batch * world_after) * (batch * world_after)
    assert set(seen) == set(stream[: head + tail])


def test_dataloader_workers_match_single_process(corpus: Path) -> None:
    ds = tl.TokenDataset(corpus, seq_len=16, batch_size=4, seed=2)
    single = rows(epoch(ds))
    ds.set_epoch(0)
    loader = DataLoader(ds, batch_size=None, num_workers=2)
    assert rows(list(loader)) == single  # workers round-robin: the very same order
    assert len(loader) == len(single) // 4


def test_consumed_batches_state_resumes_with_other_num_workers(corpus: Path) -> None:
    ds = tl.TokenDataset(corpus, seq_len=16, batch_size=4, seed=9)
    full = rows(list(DataLoader(ds, batch_size=None, num_workers=2)))
    ds.set_epoch(0)  # read epoch 0 again
    taken = []
    for i, b in enumerate(DataLoader(ds, batch_size=None, num_workers=2)):
        taken.append(b)
        if i == 4:
            break
    state = ds.state_dict(consumed_batches=5)
    fresh = tl.TokenDataset(corpus, seq_len=16, batch_size=4, seed=9)
    fresh.load_state_dict(state)
    rest = list(DataLoader(fresh, batch_size=None, num_workers=1))
    assert rows(taken) + rows(rest) == full


def test_stateful_dataloader_resumes(corpus: Path) -> None:
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    ds = tl.TokenDataset(corpus, seq_len=16, batch_size=2, seed=4)
    full = rows(list(DataLoader(ds, batch_size=None, num_workers=2)))
    ds.set_epoch(0)  # read epoch 0 again
    loader = sdl.StatefulDataLoader(ds, batch_size=None, num_workers=2)
    head = []
    for i, b in enumerate(loader):
        head.append(b)
        if i == 6:
            break
    state = loader.state_dict()
    ds2 = tl.TokenDataset(corpus, seq_len=16, batch_size=2, seed=4)
    loader2 = sdl.StatefulDataLoader(ds2, batch_size=None, num_workers=2)
    loader2.load_state_dict(state)
    assert rows(head) + rows(list(loader2)) == full


def test_state_from_other_data_is_refused(corpus: Path, tmp_path: Path) -> None:
    ds = tl.TokenDataset(corpus, seq_len=16, batch_size=2, seed=1)
    state = ds.state_dict()
    for other in (
        tl.TokenDataset(corpus, seq_len=16, batch_size=2, seed=2),
        tl.TokenDataset(corpus, seq_len=8, batch_size=2, seed=1),
        tl.TokenDataset(corpus, seq_len=16, batch_size=2, seed=1, mode="pack"),
        tl.TokenDataset(make(tmp_path / "o", [30] * 40), seq_len=16, batch_size=2, seed=1),
    ):
        with pytest.raises(ValueError, match="fingerprint"):
            other.load_state_dict(state)
    # the batch size may change: the state counts samples
    tl.TokenDataset(corpus, seq_len=16, batch_size=3, seed=1).load_state_dict(state)


def test_mixing_follows_weights_and_resumes(tmp_path: Path) -> None:
    a = make(tmp_path / "a", [40] * 60)
    b = make(tmp_path / "b", [40] * 30, base=100)
    ds = tl.TokenDataset([(a, 0.7), (b, 0.3)], seq_len=8, batch_size=10, output="numpy")
    batches = epoch(ds)
    src = np.concatenate([x["source_ids"] for x in batches])
    assert abs(src.mean() - 0.3) < 0.02
    # the rows of source 1 come from dataset b (document ids of b, tokens >= 100_000)
    ids = np.concatenate([x["input_ids"] for x in batches])
    assert (ids[src == 1] > 100_000).all()
    assert (ids[src == 0] < 100_000).all()
    ds.set_epoch(0)
    it = iter(ds)
    head = [next(it) for _ in range(7)]
    state = ds.state_dict()
    assert sum(state["counts"]) == 70
    again = tl.TokenDataset([(a, 0.7), (b, 0.3)], seq_len=8, batch_size=10, output="numpy")
    again.load_state_dict(state)
    assert rows(head) + rows(epoch(again)) == rows(batches)


def test_ordered_mode_follows_the_order_file(corpus: Path, tmp_path: Path) -> None:
    order = tmp_path / "orders" / "web.order"  # its directory does not exist yet: it is made
    docs = list(range(79, -1, -1))  # reversed
    tl.write_order(corpus, order, docs, [0, 40, 80])
    ds = tl.TokenDataset(
        corpus, seq_len=32, batch_size=1, mode="ordered", order=order, shuffle=False,
        output="numpy",
    )  # fmt: skip
    seen = []
    for b in ds:
        d = b["doc_ids"][0]
        seen += [int(x) for x in dict.fromkeys(d[d >= 0].tolist())]
    assert [d for i, d in enumerate(seen) if i == 0 or seen[i - 1] != d] == docs
    with pytest.raises(ValueError, match="twice"):
        tl.write_order(corpus, order, [1, 1], [0, 2])


def test_plans_are_cached(corpus: Path) -> None:
    tl.TokenDataset(corpus, seq_len=16, batch_size=2, mode="pack")
    again = tl.TokenDataset(corpus, seq_len=16, batch_size=2, mode="pack")
    assert again._get_stream().plans_cached == [True]
    assert list((corpus / ".plans").glob("pack-L16-*.plan"))


def test_iterating_in_the_parent_then_forking_workers(corpus: Path) -> None:
    full = rows(epoch(tl.TokenDataset(corpus, seq_len=16, batch_size=2, seed=8)))
    ds = tl.TokenDataset(corpus, seq_len=16, batch_size=2, seed=8, threads=2)
    it = iter(ds)
    first = rows([next(it)])  # threads now run in this process
    in_workers = rows(list(DataLoader(ds, batch_size=None, num_workers=2)))
    # The forked workers finish the parent's epoch: with its first batch, every window of the
    # token stream once (the last odd window dropped with the short last batch).
    stream = np.concatenate([np.asarray(tl.open_dataset(corpus)[i]) for i in range(80)])
    n = (len(stream) - 1) // 16
    windows = {tuple(stream[i * 16 : i * 16 + 17].tolist()) for i in range(n)}
    seen = first + in_workers
    assert len(seen) == len(set(seen)) == n // 2 * 2
    assert set(seen) <= windows
    # ... in the order the parent's own iterator, whose threads outlived the fork, gives.
    assert in_workers == rows(list(it))
    assert seen == full  # the same stream as a fresh dataset's


def test_consumed_batches_counts_from_the_loaded_state(corpus: Path) -> None:
    """Two resumes in a row, each from a count of batches: the second count starts at the
    first state, not at the epoch start."""

    def make() -> tl.TokenDataset:
        return tl.TokenDataset(corpus, seq_len=16, batch_size=3, seed=13)

    full = rows(epoch(make()))
    first = rows(next_n(DataLoader(make(), batch_size=None, num_workers=2), 3))
    ds = make()
    ds.load_state_dict(ds_after(make(), 3))
    second = rows(next_n(DataLoader(ds, batch_size=None, num_workers=2), 2))
    third = make()
    third.load_state_dict(ds.state_dict(consumed_batches=2))
    assert first + second + rows(epoch(third)) == full


def next_n(batches: Any, n: int) -> list[dict[str, Any]]:
    out = []
    for b in batches:
        out.append(b)
        if len(out) == n:
            break
    return out


def ds_after(ds: tl.TokenDataset, k: int) -> dict[str, Any]:
    """The state after ``k`` batches read through workers, by count."""
    next_n(DataLoader(ds, batch_size=None, num_workers=2), k)
    return ds.state_dict(consumed_batches=k)


def test_stateful_dataloader_resumes_twice(corpus: Path) -> None:
    """A second resume through StatefulDataLoader continues from the second state: each
    worker's count of batches carries the batches it skipped on the first resume."""
    sdl = pytest.importorskip("torchdata.stateful_dataloader")

    def make() -> tl.TokenDataset:
        return tl.TokenDataset(corpus, seq_len=16, batch_size=2, seed=4)

    full = rows(epoch(make()))
    got: list[tuple[int, ...]] = []
    state = None
    for take in (5, 4):
        loader = sdl.StatefulDataLoader(make(), batch_size=None, num_workers=2)
        if state is not None:
            loader.load_state_dict(state)
        got += rows(next_n(loader, take))
        state = loader.state_dict()
    last = sdl.StatefulDataLoader(make(), batch_size=None, num_workers=2)
    last.load_state_dict(state)
    assert got + rows(list(last)) == full


@pytest.mark.parametrize("world", [1, 2])
def test_a_whole_pass_counted_moves_to_the_next_epoch(corpus: Path, world: int) -> None:
    """With drop_last=False the last step is short: consumed_batches equal to the pass's
    batches is the start of the next epoch, not a position past the end of this one."""

    def make(rank: int = 0) -> tl.TokenDataset:
        return tl.TokenDataset(
            corpus, seq_len=16, batch_size=4, seed=6, drop_last=False, rank=rank,
            world_size=world,
        )  # fmt: skip

    ds = make()
    n = ds.samples_per_epoch
    assert n % (4 * world) != 0  # a short last step
    state = ds.state_dict(consumed_batches=len(ds))
    assert (state["epoch"], state["position"]) == (1, 0)
    for rank in range(world):
        resumed, reference = make(rank), make(rank)
        resumed.load_state_dict(state)
        epoch(reference)
        assert rows(epoch(resumed)) == rows(epoch(reference))  # epoch 1 of this rank


def test_bad_input(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seq_len"):
        tl.TokenDataset(corpus, seq_len=0, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        iter_first(tl.TokenDataset(corpus, seq_len=16, batch_size=10_000))
    with pytest.raises(ValueError, match="world"):
        iter_first(
            tl.TokenDataset(
                corpus, seq_len=16, batch_size=1, rank=0, world_size=10_000, drop_last=False
            )
        )
    empty = tmp_path / "empty"
    tl.DatasetWriter(empty, "u16").close()
    with pytest.raises(ValueError, match="no samples"):
        tl.TokenDataset(empty, seq_len=16, batch_size=1)
    with pytest.raises(ValueError, match="weight"):
        tl.TokenDataset([(corpus, -1.0), (corpus, 2.0)], seq_len=16, batch_size=1)
    with pytest.raises(ValueError, match="sum to zero"):
        tl.TokenDataset([(corpus, 0.0)], seq_len=16, batch_size=1)
    with pytest.raises(FileNotFoundError):
        tl.TokenDataset(tmp_path / "missing", seq_len=16, batch_size=1)
    with pytest.raises(ValueError, match="mode"):
        tl.TokenDataset(corpus, seq_len=16, batch_size=1, mode="zigzag")
    with pytest.raises(ValueError, match="order"):
        tl.TokenDataset(corpus, seq_len=16, batch_size=1, mode="ordered")


def iter_first(ds: tl.TokenDataset) -> dict[str, Any]:
    return next(iter(ds))


@FAST
@given(seed=st.integers(0, 2**32), window=st.integers(16, 400))
def test_a_windowed_shuffle_reads_every_sample_once_a_few_runs_at_a_time(
    corpus: Path, seed: int, window: int
) -> None:
    """``shuffle_window=n``: each epoch is still a permutation of the samples, and each window
    of about ``n`` positions draws from at most 16 runs of ``n // 16`` consecutive samples (so
    a cache holds a window's shards), in an order that differs from the stored one."""
    ds = tl.TokenDataset(
        corpus, seq_len=16, batch_size=1, output="numpy", seed=seed, shuffle_window=window,
        drop_last=False,
    )  # fmt: skip
    ids = np.concatenate([b["sample_ids"] for b in ds])
    n = len(ids)
    np.testing.assert_array_equal(np.sort(ids), np.arange(n))
    if window >= n:
        return  # a source no larger than a window is shuffled as a whole
    block = window // 16
    span = 16 * block
    full = n // block * block
    for start in range(0, full, span):
        runs = set((ids[start : min(start + span, full)] // block).tolist())
        assert len(runs) <= 16, (start, sorted(runs))
    assert set(ids[full:].tolist()) == set(range(full, n))  # the short run, last
    if n >= 2 * span:
        assert not np.array_equal(ids, np.arange(n))


def test_a_state_saved_under_another_shuffle_window_is_refused(corpus: Path) -> None:
    """The window is part of the stream: resuming a windowed run without it (or with another
    one) would silently read another order, so the state is refused."""
    kw = dict(seq_len=16, batch_size=2, output="numpy")
    ds = tl.TokenDataset(corpus, **kw, shuffle_window=32)
    it = iter(ds)
    next(it)
    state = ds.state_dict()
    for window in (0, 64):
        other = tl.TokenDataset(corpus, **kw, shuffle_window=window)
        with pytest.raises(ValueError, match=r"saved for other data.*shuffle_window must match"):
            other.load_state_dict(state)
    same = tl.TokenDataset(corpus, **kw, shuffle_window=32)
    same.load_state_dict(state)
