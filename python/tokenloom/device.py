"""Moving loader batches to an accelerator, overlapping the copy with compute."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tokenloom.runtime import torch_or_none

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tokenloom.loader import TokenDataset


def to_device(batch: dict[str, Any], device: Any, non_blocking: bool = True) -> dict[str, Any]:
    """Moves every tensor of ``batch`` to ``device`` (asynchronously from pinned memory)."""
    return {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items()}


def _token_dataset(batches: Any) -> TokenDataset | None:
    """The ``TokenDataset`` behind ``batches``: itself, or the dataset of a DataLoader."""
    from tokenloom.loader import TokenDataset

    for candidate in (batches, getattr(batches, "dataset", None)):
        if isinstance(candidate, TokenDataset):
            return candidate
    return None


class DevicePrefetcher:
    """Wraps an iterable of batches and copies batch *n + 1* to ``device`` on a side CUDA
    stream while the caller computes on batch *n*. On a CPU device it passes batches through.

    Batches should come from pinned memory (``DataLoader(..., pin_memory=True)`` or
    ``TokenDataset(..., pin_memory=True)``) for the copy to overlap.

    It holds one batch more than the caller has, and counts the batches it handed over:
    :meth:`state_dict` is the dataset's state after exactly those (and so is the dataset's
    own ``state_dict()`` meanwhile, where the dataset is read in this process or through
    ``tl.DataLoader``).
    """

    def __init__(self, batches: Any, device: Any) -> None:
        torch = torch_or_none()
        if torch is None:
            raise ImportError("DevicePrefetcher needs PyTorch")
        self.batches = batches
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        if self._cuda and not torch.cuda.is_available():
            why = "this PyTorch is built without CUDA" if torch.version.cuda is None else (
                "PyTorch finds no CUDA device on this machine"
            )  # fmt: skip
            raise RuntimeError(
                f"DevicePrefetcher(device={str(device)!r}): {why} "
                "(torch.cuda.is_available() is False); pass device='cpu' to train on the CPU"
            )
        self._stream = torch.cuda.Stream(self.device) if self._cuda else None
        self._dataset = _token_dataset(batches)
        self._handed = 0

    def _load(self, it: Iterator[dict[str, Any]]) -> dict[str, Any] | None:
        batch = next(it, None)
        if batch is None or not self._cuda:
            return batch
        torch = torch_or_none()
        with torch.cuda.stream(self._stream):
            return to_device(batch, self.device)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        torch = torch_or_none()
        ds = self._dataset
        it = iter(self.batches)
        self._handed = 0
        nxt = self._load(it)
        while nxt is not None:
            if self._cuda:
                current = torch.cuda.current_stream(self.device)
                current.wait_stream(self._stream)
                for v in nxt.values():
                    v.record_stream(current)
            batch = nxt
            nxt = self._load(it)
            if ds is not None:
                # The batch held ahead stays unseen by the trainer also when this pass is
                # abandoned: the dataset's next pass forgets it.
                ds._held = int(nxt is not None)
            self._handed += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """The dataset's state after the batches this prefetcher handed over in its pass
        (load it with ``TokenDataset.load_state_dict``); exact with any ``num_workers``."""
        if self._dataset is None:
            raise TypeError(
                "DevicePrefetcher.state_dict() reads the position of a TokenDataset: give "
                "the prefetcher a TokenDataset or a DataLoader of one"
            )
        return self._dataset.state_dict(consumed_batches=self._handed)
