"""Moving loader batches to an accelerator, overlapping the copy with compute."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tokenloom.runtime import torch_or_none

if TYPE_CHECKING:
    from collections.abc import Iterator


def to_device(batch: dict[str, Any], device: Any, non_blocking: bool = True) -> dict[str, Any]:
    """Moves every tensor of ``batch`` to ``device`` (asynchronously from pinned memory)."""
    return {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items()}


class DevicePrefetcher:
    """Wraps an iterable of batches and copies batch *n + 1* to ``device`` on a side CUDA
    stream while the caller computes on batch *n*. On a CPU device it passes batches through.

    Batches should come from pinned memory (``DataLoader(..., pin_memory=True)`` or
    ``TokenDataset(..., pin_memory=True)``) for the copy to overlap.
    """

    def __init__(self, batches: Any, device: Any) -> None:
        torch = torch_or_none()
        if torch is None:
            raise ImportError("DevicePrefetcher needs PyTorch")
        self.batches = batches
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(self.device) if self._cuda else None

    def _load(self, it: Iterator[dict[str, Any]]) -> dict[str, Any] | None:
        batch = next(it, None)
        if batch is None or not self._cuda:
            return batch
        torch = torch_or_none()
        with torch.cuda.stream(self._stream):
            return to_device(batch, self.device)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        torch = torch_or_none()
        it = iter(self.batches)
        nxt = self._load(it)
        while nxt is not None:
            if self._cuda:
                current = torch.cuda.current_stream(self.device)
                current.wait_stream(self._stream)
                for v in nxt.values():
                    v.record_stream(current)
            batch = nxt
            nxt = self._load(it)
            yield batch
