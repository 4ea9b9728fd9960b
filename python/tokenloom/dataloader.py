"""``tl.DataLoader``: a ``torch.utils.data.DataLoader`` of a ``TokenDataset`` whose state is
exact with any number of workers and whose passes advance epochs as in-process iteration
does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader as _TorchDataLoader

from tokenloom.loader import TokenDataset

if TYPE_CHECKING:
    from torch.utils.data.dataloader import _BaseDataLoaderIter

    from tokenloom.loader import Handed

__all__ = ["DataLoader"]


class DataLoader(_TorchDataLoader):  # type: ignore[type-arg]
    """Iterates a :class:`TokenDataset` (in ``num_workers`` processes, or in this one with 0)
    and counts, in this process, the batches handed to the trainer. Hence:

    - :meth:`state_dict` is the position after the batches the trainer received, with any
      ``num_workers`` (also while a ``DevicePrefetcher`` holds the next batch), and resumes
      with any ``num_workers`` and world size; ``ds.state_dict()`` gives the same.
    - A pass continues where the previous one stopped; a pass run to its end moves on to
      the next epoch, as iterating the dataset in this process does.

    Batches are made by the dataset, so ``batch_size`` must stay ``None``;
    ``persistent_workers=True`` is refused (persistent workers keep copies of the dataset
    that would not follow its position). Other arguments go to ``torch.utils.data.DataLoader``.
    """

    dataset: TokenDataset

    def __init__(
        self,
        dataset: TokenDataset,
        *,
        num_workers: int = 0,
        pin_memory: bool = False,
        **kwargs: Any,
    ) -> None:
        if not isinstance(dataset, TokenDataset):
            raise TypeError(f"tl.DataLoader reads a TokenDataset, got {type(dataset).__name__}")
        if kwargs.pop("batch_size", None) is not None:
            raise ValueError(
                "a TokenDataset yields whole batches: leave batch_size=None (set the batch "
                "size on the TokenDataset)"
            )
        if kwargs.get("persistent_workers"):
            raise ValueError(
                "persistent_workers=True keeps copies of the dataset made when the workers "
                "start, which do not follow its position; leave it False"
            )
        super().__init__(
            dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, **kwargs
        )

    def __iter__(self) -> _Counted:  # type: ignore[override]
        handed = self.dataset._begin_pass(counted=self.num_workers > 0)
        return _Counted(super().__iter__(), handed)

    def state_dict(self) -> dict[str, Any]:
        """The dataset's state after the batches the trainer received (see the class)."""
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues from ``state`` at the next pass."""
        self.dataset.load_state_dict(state)


class _Counted:
    """The DataLoader's iterator, counting the batches it hands over."""

    def __init__(self, batches: _BaseDataLoaderIter, handed: Handed | None) -> None:
        self._batches = batches
        self._handed = handed

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> Any:
        try:
            batch = next(self._batches)
        except StopIteration:
            if self._handed is not None:
                self._handed.done = True
            raise
        if self._handed is not None:
            self._handed.batches += 1
        return batch

    def __len__(self) -> int:
        return len(self._batches)
