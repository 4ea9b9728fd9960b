"""Global selection across ranks: every rank all-gathers the candidates' utilities and sketches,
runs the same selection on the global candidate batch (ranks' rows in rank order) with the same
memory, and keeps the selected rows that are its own. The result depends only on the global
candidate batch, not on how it is split across ranks."""

from __future__ import annotations

from typing import Any

import numpy as np


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def active(group: Any) -> bool:
    """Whether torch.distributed is initialised (selection then spans ``group``'s ranks)."""
    try:
        dist = _dist()
    except ImportError:
        return False
    return bool(dist.is_available() and dist.is_initialized())


def _device(group: Any) -> Any:
    import torch

    if _dist().get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _tensor(x: Any, device: Any) -> Any:
    import torch

    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float32)))
    return x.detach().to(device=device, dtype=torch.float32)


def gather_candidates(
    utility: Any, sketches: Any | None, dim: int, group: Any = None
) -> tuple[np.ndarray, np.ndarray | None, int, int]:
    """``(utility, sketches)`` of all ranks' candidates, in rank order, with this rank's
    ``(offset, rows)`` in them. Shapes are checked on every rank first, so that a bad input
    on one rank raises on all of them instead of leaving the others waiting."""
    import torch

    dist = _dist()
    dev = _device(group)
    u = _tensor(utility, dev).reshape(-1)
    n = int(u.shape[0])
    z = None if sketches is None else _tensor(sketches, dev)
    problem = ""
    if z is not None and tuple(z.shape) != (n, dim):
        problem = f"sketches have shape {tuple(z.shape)} but {n} candidates of {dim} floats"
    world = dist.get_world_size(group)
    head = torch.tensor([n, int(bool(problem)), int(z is not None)], device=dev)
    heads = [torch.empty_like(head) for _ in range(world)]
    dist.all_gather(heads, head, group=group)
    info = torch.stack(heads).cpu().tolist()
    if problem:
        raise ValueError(f"{problem} were expected")
    bad = [r for r, (_, err, _) in enumerate(info) if err]
    if bad:
        raise ValueError(f"rank {bad[0]} gave candidates of the wrong shape (see its error)")
    if len({has for _, _, has in info}) != 1:
        raise ValueError("some ranks passed sketches and others did not")
    sizes = [rows for rows, _, _ in info]
    most = max(sizes)
    u_all = _gather_rows(torch.nn.functional.pad(u, (0, most - n)), sizes, world, group)
    z_all = None
    if z is not None:
        padded = torch.nn.functional.pad(z, (0, 0, 0, most - n))
        z_all = _gather_rows(padded, sizes, world, group)
    offset = sum(sizes[: dist.get_rank(group)])
    return u_all, z_all, offset, n


def _gather_rows(x: Any, sizes: list[int], world: int, group: Any) -> np.ndarray:
    import torch

    parts = [torch.empty_like(x) for _ in range(world)]
    _dist().all_gather(parts, x.contiguous(), group=group)
    rows = torch.cat([p[:k] for p, k in zip(parts, sizes, strict=True)])
    return np.ascontiguousarray(rows.cpu().numpy(), dtype=np.float32)


def local_rows(kept: np.ndarray, offset: int, rows: int) -> np.ndarray:
    """The globally kept rows that are this rank's, as its row indices (best first)."""
    mine = kept[(kept >= offset) & (kept < offset + rows)]
    return (mine - offset).astype(np.int64)
