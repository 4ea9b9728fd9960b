"""What the main process knows of the passes DataLoader workers make over a ``TokenDataset``.

Workers iterate copies of the dataset, so nothing they do reaches the main process's copy:
its position stays where the pass began. A few integers in shared memory let each side check
the other, so that a wrong position is refused instead of returned:

- the main process publishes a token for every change of its position (``set_epoch``,
  ``load_state_dict``, the start of a pass in process);
- worker 0 records, at the start of each pass, the main token its copy was made under and a
  key of where the pass starts (the copy's own token and the cursor).

From these, ``state_dict()`` in the main process knows that workers iterated since its
position last changed, a pass that would start where an earlier worker pass started is
recognised as a repeat, and a persistent worker whose copy predates the latest change is
recognised as stale.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from tokenloom.runtime import torch_or_none

if TYPE_CHECKING:
    from collections.abc import Sequence

MAIN, WORKER_MAIN, WORKER_KEY = range(3)


def new_token() -> int:
    """A random token, never 0 (the value of unwritten records)."""
    return 1 + secrets.randbits(62)


def pass_key(token: int, cursor: tuple[int, int, Sequence[int]], skip: int) -> int:
    """Identifies a pass: the token of the copy that makes it, where it starts, batches skipped."""
    epoch, position, counts = cursor
    return hash((token, epoch, position, tuple(counts), skip))


class WorkerRecord:
    """Three integers shared between a dataset and the copies DataLoader workers make of it
    (through fork, or pickled by torch's multiprocessing as shared memory under spawn)."""

    def __init__(self) -> None:
        torch = torch_or_none()
        self._slots: Any = None
        if torch is not None:  # without torch there is no DataLoader, hence no workers
            self._slots = torch.zeros(3, dtype=torch.int64).share_memory_()

    def __getitem__(self, slot: int) -> int:
        return 0 if self._slots is None else int(self._slots[slot])

    def __setitem__(self, slot: int, value: int) -> None:
        if self._slots is not None:
            self._slots[slot] = value
