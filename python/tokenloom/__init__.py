"""tokenloom: Rust-accelerated token data loading for language-model training.

Datasets are directories of memory-mapped token shards::

    import tokenloom as tl
    with tl.DatasetWriter("data/web", dtype="u16", eos_id=50256, vocab_size=50257) as w:
        w.add(tokens)                      # one document: numpy array or list of ints
    ds = tl.open_dataset("data/web")
    ds[0]                                  # read-only numpy view of document 0
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tokenloom import select as _select
from tokenloom._core import (
    CorruptShardError,
    Dataset,
    FormatVersionError,
    JobCancelledError,
    LockedError,
    TokenloomError,
)
from tokenloom._core import __version__ as __version__
from tokenloom._renamed import renamed_names
from tokenloom.build import BuildInputError, BuildResult, build
from tokenloom.embedders import embedder
from tokenloom.knn import knn
from tokenloom.order import order, order_report
from tokenloom.rows import concat_rows, take_rows
from tokenloom.select import BatchSelector
from tokenloom.select_scores import FastJL, nuclear_norm
from tokenloom.shard import DatasetWriter, open_dataset

if TYPE_CHECKING:
    from tokenloom.dataloader import DataLoader
    from tokenloom.device import DevicePrefetcher, to_device
    from tokenloom.loader import TokenDataset, write_order

# The loader imports torch (seconds): loaded on first use, so that `tokenloom` commands and
# build worker processes start fast.
_LAZY = {name: "tokenloom.loader" for name in ("TokenDataset", "write_order")}
_LAZY.update({name: "tokenloom.device" for name in ("DevicePrefetcher", "to_device")})
_LAZY["DataLoader"] = "tokenloom.dataloader"


# Old names kept for a while, with a warning.
# Old names kept for a release, each with why it changed.
_RENAMED = {
    "CancelledError": ("JobCancelledError", "it clashed with asyncio.CancelledError"),
    **_select.RENAMED,
}
_renamed = renamed_names(__name__, _RENAMED, globals())


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        return _renamed(name)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tokenloom' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BatchSelector",
    "BuildInputError",
    "BuildResult",
    "CorruptShardError",
    "DataLoader",
    "Dataset",
    "DatasetWriter",
    "DevicePrefetcher",
    "FastJL",
    "FormatVersionError",
    "JobCancelledError",
    "LockedError",
    "TokenDataset",
    "TokenloomError",
    "__version__",
    "build",
    "concat_rows",
    "embedder",
    "knn",
    "nuclear_norm",
    "open_dataset",
    "order",
    "order_report",
    "take_rows",
    "to_device",
    "write_order",
]
