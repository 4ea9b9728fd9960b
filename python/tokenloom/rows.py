"""Row operations on loader batches: keeping some rows, appending others.

Every array of a batch is indexed by row (``[rows, seq_len]`` or ``[rows]``) except
``cu_seqlens``, the piece boundaries of the flattened batch, which is rebuilt for the new rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return np.asarray(x.detach().to("cpu").numpy())
    return np.asarray(x)


def _like(values: np.ndarray, ref: Any) -> Any:
    """``values`` as the same kind of array as ``ref`` (numpy, or a torch tensor on its
    device with its dtype)."""
    if hasattr(ref, "detach"):
        import torch

        return torch.from_numpy(values).to(device=ref.device, dtype=ref.dtype)
    return values.astype(ref.dtype, copy=False)


def num_rows(batch: dict[str, Any]) -> int:
    """Rows of a batch (from ``input_ids``)."""
    if "input_ids" not in batch:
        raise ValueError(f"a batch needs input_ids; this one has {sorted(batch)}")
    return int(batch["input_ids"].shape[0])


def row_indices(rows: Any, n: int) -> np.ndarray:
    """``rows`` (indices or a boolean mask over ``n`` rows) as int64 indices, checked."""
    idx = _numpy(rows)
    if idx.dtype == np.bool_:
        if idx.shape != (n,):
            raise ValueError(f"a row mask must have shape ({n},), got {idx.shape}")
        return np.flatnonzero(idx).astype(np.int64)
    idx = idx.reshape(-1)
    if idx.size and not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"rows must be integer indices or a boolean mask, got {idx.dtype}")
    idx = idx.astype(np.int64)
    bad = idx[(idx < -n) | (idx >= n)]
    if bad.size:
        raise ValueError(f"row {int(bad[0])} is out of range for a batch of {n} rows")
    idx = np.where(idx < 0, idx + n, idx)
    if np.unique(idx).size != idx.size:
        raise ValueError(f"rows {idx.tolist()} name a row more than once")
    return idx


def _row_pieces(cu: np.ndarray, rows: int, seq_len: int) -> list[np.ndarray]:
    """The piece ends of each row, relative to the row's start."""
    ends = [np.searchsorted(cu, r * seq_len, side="right") for r in range(rows + 1)]
    return [cu[ends[r] : ends[r + 1]] - r * seq_len for r in range(rows)]


def _cu_of(pieces: list[np.ndarray], seq_len: int) -> np.ndarray:
    out = [np.zeros(1, np.int64)]
    out += [p.astype(np.int64) + r * seq_len for r, p in enumerate(pieces)]
    return np.concatenate(out)


def take_rows(batch: dict[str, Any], rows: Any) -> dict[str, Any]:
    """The batch of the given rows (indices, in that order, or a boolean mask), with
    ``cu_seqlens`` rebuilt. Use it instead of ``{k: v[rows] for k, v in batch.items()}``,
    which would keep the wrong ``cu_seqlens``."""
    n = num_rows(batch)
    idx = row_indices(rows, n)
    seq_len = int(batch["input_ids"].shape[1])
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if key == "cu_seqlens":
            pieces = _row_pieces(_numpy(value).astype(np.int64), n, seq_len)
            out[key] = _like(_cu_of([pieces[i] for i in idx], seq_len), value)
        elif hasattr(value, "detach"):
            import torch

            out[key] = value[torch.from_numpy(idx).to(value.device)]
        else:
            out[key] = value[idx]
    return out


def concat_rows(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The rows of ``first`` followed by those of ``second`` (same keys and seq_len);
    the result's arrays are of ``first``'s kind and device."""
    if set(first) != set(second):
        raise ValueError(f"batches with other arrays: {sorted(first)} and {sorted(second)}")
    out: dict[str, Any] = {}
    for key, a in first.items():
        b = second[key]
        if key == "cu_seqlens":
            a_np, b_np = _numpy(a).astype(np.int64), _numpy(b).astype(np.int64)
            out[key] = _like(np.concatenate([a_np, b_np[1:] + a_np[-1]]), a)
        elif hasattr(a, "detach"):
            import torch

            out[key] = torch.cat([a, _like(_numpy(b), a)])
        else:
            out[key] = np.concatenate([a, _numpy(b).astype(a.dtype, copy=False)])
    return out
