"""Where the process runs: torch if installed, its rank in a distributed job, its
DataLoader worker, and where plans are cached."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def torch_or_none() -> Any:
    """The torch module, or None where it is not installed (the loader then yields numpy)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def cache_dir(path: str) -> str | None:
    """``.plans`` next to the dataset when writable, else (and for a remote dataset) the
    user cache; plan files are named by their fingerprint, so datasets can share it."""
    p = Path(path)
    home = p if p.is_dir() else p.parent
    if "://" not in path and os.access(home, os.W_OK):
        return str(home / ".plans")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "tokenloom" / "plans")


def dist_info(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Rank and world size: arguments, else torch.distributed, else RANK/WORLD_SIZE."""
    if rank is not None or world_size is not None:
        return int(rank or 0), int(world_size or 1)
    torch = torch_or_none()
    if (
        torch is not None
        and torch.distributed.is_available()
        and torch.distributed.is_initialized()
    ):
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def worker_info() -> tuple[int, int] | None:
    """(worker id, workers) inside a DataLoader worker, else None."""
    torch = torch_or_none()
    if torch is None:
        return None
    info = torch.utils.data.get_worker_info()
    return None if info is None else (info.id, info.num_workers)
