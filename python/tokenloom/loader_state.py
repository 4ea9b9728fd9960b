"""The state dict of a ``TokenDataset``: written by ``state_dict()``, checked field by field
when it is loaded (so that a damaged or foreign state fails at ``load_state_dict`` with the
field named, not at the first batch)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenloom import _core

STATE_VERSION = 1
Cursor = tuple[int, int, list[int]]
WorkerPos = tuple[int, int, int]  # (worker id, workers, batches yielded)
_U64 = 1 << 64


def make_state(fingerprint: str, cursor: Cursor, worker: WorkerPos | None = None) -> dict[str, Any]:
    epoch, position, counts = cursor
    state: dict[str, Any] = {
        "version": STATE_VERSION,
        "fingerprint": fingerprint,
        "epoch": epoch,
        "position": position,
        "counts": list(counts),
    }
    if worker is not None:
        state["worker"] = {"id": worker[0], "num_workers": worker[1], "batches": worker[2]}
    return state


def _count(value: Any, field: str) -> int:
    """``value`` as an int in ``[0, 2**64)`` (numpy integers too, not bools or floats), else
    a ValueError naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{field} must be an integer, got {value!r} ({type(value).__name__})")
    n = int(value)
    if not 0 <= n < _U64:
        raise ValueError(f"{field} must be between 0 and 2**64 - 1, got {n}")
    return n


def _field(state: Mapping[str, Any], field: str) -> Any:
    if field not in state:
        raise ValueError(f"the state has no {field!r} field (expected one from state_dict())")
    return state[field]


def read_state(
    state: Any, fingerprint: str, stream: _core.Stream
) -> tuple[Cursor, WorkerPos | None]:
    """The cursor (and worker position) of ``state``, every field checked."""
    if not isinstance(state, Mapping):
        raise TypeError(f"a state is the dict state_dict() returns, got {type(state).__name__}")
    version = state.get("version")
    if version != STATE_VERSION or isinstance(version, bool):
        raise ValueError(
            f"unsupported state version {version!r} (this tokenloom reads {STATE_VERSION})"
        )
    theirs = _field(state, "fingerprint")
    if not isinstance(theirs, str):
        raise ValueError(f"fingerprint must be a string, got {theirs!r}")
    # States saved before the fingerprint covered document boundaries carry the legacy one.
    if theirs not in (fingerprint, stream.legacy_fingerprint):
        raise ValueError(
            f"this state was saved for other data: its fingerprint {theirs} differs from this "
            f"dataset's {fingerprint} (datasets, mode, seq_len, order file, weights, seed, "
            "shuffle and shuffle_window must match)"
        )
    counts = _field(state, "counts")
    if isinstance(counts, (str, bytes)) or not isinstance(counts, Sequence):
        raise ValueError(f"counts must be a list of integers, got {counts!r}")
    cursor = (
        _count(_field(state, "epoch"), "epoch"),
        _count(_field(state, "position"), "position"),
        [_count(c, f"counts[{i}]") for i, c in enumerate(counts)],
    )
    stream.check_cursor(cursor)
    w = state.get("worker")
    if w is None:
        return cursor, None
    if not isinstance(w, Mapping):
        raise ValueError(f"worker must be a dict, got {w!r}")
    wid = _count(_field(w, "id"), "worker.id")
    n = _count(_field(w, "num_workers"), "worker.num_workers")
    if wid >= n:
        raise ValueError(f"worker.id {wid} is not below worker.num_workers {n}")
    return cursor, (wid, n, _count(_field(w, "batches"), "worker.batches"))
