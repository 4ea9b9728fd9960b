"""Selection accounting for a ``TokenDataset``: which samples were offered to a selector and
which it kept, per source and per sample; and the queue of unkept samples offered again.

A sample is named by ``(source_ids[r], sample_ids[r])`` of its batch row. With re-offering,
:func:`with_reoffers` appends up to ``reoffer_rows`` queued samples to each candidate batch,
assembled again from the dataset, and marks every row with ``offered_before`` (how many times
its sample was offered before; 0 for fresh rows). The queue is first in, first out, holds at
most ``capacity`` samples (the oldest fall off, counted as ``dropped``) and lives in the
process that selects, so its state is a few integers per queued sample and resuming is exact.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from .rows import _numpy, concat_rows, num_rows, row_indices

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

OFFERED_BEFORE = "offered_before"
LEDGER_VERSION = 1


def _tensor(a: np.ndarray) -> Any:
    try:
        import torch
    except ImportError:
        return a
    return torch.from_numpy(np.ascontiguousarray(a))


class SelectionLedger:
    """Offered and kept counts per source and per sample, and the re-offer queue."""

    def __init__(
        self,
        paths: list[str],
        num_samples: list[int],
        reoffer: int = 0,
        reoffer_rows: int = 1,
        capacity: int = 0,
    ) -> None:
        self.paths = list(paths)
        self.num_samples = [int(n) for n in num_samples]
        self.reoffer, self.reoffer_rows, self.capacity = int(reoffer), int(reoffer_rows), capacity
        n = len(self.paths)
        self.seen = np.zeros(n, np.int64)
        self.kept = np.zeros(n, np.int64)
        self.reoffered = np.zeros(n, np.int64)
        self.dropped = 0
        self.pending: deque[tuple[int, int, int]] = deque()  # (source, sample, offers so far)
        self.sample_offered: list[np.ndarray] | None = None
        self.sample_kept: list[np.ndarray] | None = None

    # -- booking --------------------------------------------------------------------------

    def _per_sample(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if self.sample_offered is None or self.sample_kept is None:
            self.sample_offered = [np.zeros(n, np.int32) for n in self.num_samples]
            self.sample_kept = [np.zeros(n, np.int32) for n in self.num_samples]
        return self.sample_offered, self.sample_kept

    def record(self, batch: dict[str, Any], kept: Any) -> None:
        missing = [k for k in ("source_ids", "sample_ids") if k not in batch]
        if missing:
            raise ValueError(
                f"the batch lacks {', '.join(missing)}: keep them in TokenDataset(outputs=...) "
                "to account for selection"
            )
        n = num_rows(batch)
        src = _numpy(batch["source_ids"]).astype(np.int64).reshape(-1)
        ids = _numpy(batch["sample_ids"]).astype(np.int64).reshape(-1)
        before = (
            _numpy(batch[OFFERED_BEFORE]).astype(np.int64).reshape(-1)
            if OFFERED_BEFORE in batch
            else np.zeros(n, np.int64)
        )
        if not (src.size == ids.size == before.size == n):
            raise ValueError(f"source_ids, sample_ids and {OFFERED_BEFORE} must hold {n} rows")
        width = len(self.paths)
        sizes = np.array(self.num_samples, np.int64)
        bad = (src < 0) | (src >= width)
        bad |= (ids < 0) | (ids >= sizes[np.clip(src, 0, width - 1)])
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"row {r} names sample {int(ids[r])} of source {int(src[r])}, which this "
                f"dataset does not have ({width} sources of {self.num_samples} samples); "
                "record batches of this dataset"
            )
        keep = np.zeros(n, bool)
        keep[row_indices(kept, n)] = True
        self.seen += np.bincount(src, minlength=width)
        self.kept += np.bincount(src[keep], minlength=width)
        self.reoffered += np.bincount(src[before > 0], minlength=width)
        offered, kept_counts = self._per_sample()
        for s in range(width):
            here = src == s
            np.add.at(offered[s], ids[here], 1)
            np.add.at(kept_counts[s], ids[here & keep], 1)
        for row in np.flatnonzero(~keep):
            if before[row] < self.reoffer:
                self.pending.append((int(src[row]), int(ids[row]), int(before[row]) + 1))
        while len(self.pending) > self.capacity:
            self.pending.popleft()
            self.dropped += 1

    def take_pending(self) -> list[tuple[int, int, int]]:
        """The next queued samples for a candidate batch (removed from the queue)."""
        k = min(self.reoffer_rows, len(self.pending))
        return [self.pending.popleft() for _ in range(k)]

    # -- reading ----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        def rate(kept: int, seen: int) -> float:
            return kept / seen if seen else 0.0

        sources = [
            {
                "path": p,
                "seen": int(self.seen[s]),
                "kept": int(self.kept[s]),
                "keep_rate": rate(int(self.kept[s]), int(self.seen[s])),
                "reoffered": int(self.reoffered[s]),
            }
            for s, p in enumerate(self.paths)
        ]
        seen, kept = int(self.seen.sum()), int(self.kept.sum())
        return {
            "seen": seen,
            "kept": kept,
            "keep_rate": rate(kept, seen),
            "reoffered": int(self.reoffered.sum()),
            "pending": len(self.pending),
            "dropped": self.dropped,
            "sources": sources,
        }

    def counts(self) -> list[dict[str, np.ndarray]]:
        offered, kept = self._per_sample()
        return [{"offered": o.copy(), "kept": k.copy()} for o, k in zip(offered, kept, strict=True)]

    # -- state ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        offered, kept = self._per_sample()
        pending = np.array(list(self.pending), np.int64).reshape(-1, 3)
        return {
            "version": LEDGER_VERSION,
            "seen": self.seen.tolist(),
            "kept": self.kept.tolist(),
            "reoffered": self.reoffered.tolist(),
            "dropped": self.dropped,
            "pending": _tensor(pending),
            "sample_offered": [_tensor(a) for a in offered],
            "sample_kept": [_tensor(a) for a in kept],
        }

    def load(self, state: dict[str, Any]) -> None:
        if state.get("version") != LEDGER_VERSION:
            raise ValueError(
                f"selection state version {state.get('version')!r} is not {LEDGER_VERSION}"
            )
        n = len(self.paths)
        sizes = [int(np.asarray(_numpy(a)).size) for a in state["sample_offered"]]
        if len(state["seen"]) != n or sizes != self.num_samples:
            raise ValueError(
                f"the selection state counts samples of {len(state['seen'])} sources with "
                f"{sizes} samples; this dataset has {n} with {self.num_samples}"
            )
        self.seen = np.array(state["seen"], np.int64)
        self.kept = np.array(state["kept"], np.int64)
        self.reoffered = np.array(state["reoffered"], np.int64)
        self.dropped = int(state["dropped"])
        pending = _numpy(state["pending"]).astype(np.int64).reshape(-1, 3)
        self.pending = deque((int(s), int(i), int(o)) for s, i, o in pending)
        self.sample_offered = [_numpy(a).astype(np.int32).copy() for a in state["sample_offered"]]
        self.sample_kept = [_numpy(a).astype(np.int32).copy() for a in state["sample_kept"]]


def with_reoffers(
    ledger: SelectionLedger,
    batches: Iterable[dict[str, Any]],
    assemble: Callable[[list[tuple[int, int]]], dict[str, Any]],
) -> Iterator[dict[str, Any]]:
    """Each batch of ``batches`` followed by the rows of the next queued samples (built by
    ``assemble`` from ``(source, sample)`` pairs), every row marked with ``offered_before``."""
    for batch in batches:
        n = num_rows(batch)
        fresh = dict(batch)
        fresh[OFFERED_BEFORE] = _like_rows(np.zeros(n, np.int64), batch["input_ids"])
        queued = ledger.take_pending()
        if not queued:
            yield fresh
            continue
        extra = assemble([(s, i) for s, i, _ in queued])
        extra = {k: v for k, v in extra.items() if k in batch}
        extra[OFFERED_BEFORE] = np.array([o for _, _, o in queued], np.int64)
        yield concat_rows(fresh, extra)


def _like_rows(values: np.ndarray, ref: Any) -> Any:
    if hasattr(ref, "detach"):
        import torch

        return torch.from_numpy(values).to(ref.device)
    return values


class SelectionAccounting:
    """The selection methods of ``TokenDataset`` (which provides the attributes below)."""

    paths: list[str]
    outputs: tuple[str, ...]
    dtype: str
    ignore_index: int | None
    pad_id: int
    reoffer: tuple[int, int, int]  # (offers again, rows per batch, queue capacity)
    _ledger: SelectionLedger | None

    def _get_stream(self) -> Any:
        raise NotImplementedError

    def _convert(self, arrays: dict[str, np.ndarray], in_worker: bool) -> dict[str, Any]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def _get_ledger(self) -> SelectionLedger:
        if self._ledger is None:
            reoffer, rows, capacity = self.reoffer
            stream = self._get_stream()
            self._ledger = SelectionLedger(self.paths, stream.num_samples, reoffer, rows, capacity)
        return self._ledger

    def record_selection(self, batch: dict[str, Any], kept: Any) -> None:
        """Books which rows of the candidate ``batch`` a selector kept (indices, e.g. what
        ``BatchSelector.select`` returned, or a boolean mask); queues the others for another
        offer with ``reoffer_unkept``. Call it in the process that selects."""
        self._get_ledger().record(batch, kept)

    def selection_stats(self) -> dict[str, Any]:
        """Rows ``seen`` and ``kept`` (and ``keep_rate``, ``reoffered``) in total and per
        source, with the re-offer queue's ``pending`` and ``dropped`` samples."""
        return self._get_ledger().stats()

    def selection_counts(self) -> list[dict[str, np.ndarray]]:
        """Per source, how many times each sample (by ``sample_ids``) was offered and kept."""
        return self._get_ledger().counts()

    def candidates(
        self, batches: Iterable[dict[str, Any]] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Candidate batches: each batch of ``batches`` (a DataLoader over this dataset;
        default: iterating this dataset) followed by up to ``reoffer_rows`` queued unkept
        samples, every row marked with ``offered_before`` (0 for fresh rows)."""
        source = self if batches is None else batches
        return with_reoffers(self._get_ledger(), source, self._assemble)

    def _assemble(self, samples: list[tuple[int, int]]) -> dict[str, Any]:
        arrays = self._get_stream().assemble(
            samples,
            dtype=self.dtype,
            ignore_index=self.ignore_index,
            pad_id=self.pad_id,
            position_ids="position_ids" in self.outputs,
            doc_ids="doc_ids" in self.outputs,
        )
        return self._convert(arrays, in_worker=False)
