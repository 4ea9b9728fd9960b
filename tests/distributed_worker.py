"""One rank of ``test_distributed.py``, started by ``torchrun`` (gloo, CPU): reads an epoch of
a dataset through a DataLoader with 2 workers, optionally from a saved state, and saves the
rows every rank read (rank 0 writes them) and the state after ``STOP`` batches.

Usage: ``torchrun --nproc-per-node N distributed_worker.py DATASET OUT BATCH STOP STATE|-``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import tokenloom as tl
import torch.distributed as dist
from torch.utils.data import DataLoader


def main() -> None:
    path, out, batch, stop, state_in = sys.argv[1:6]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    ds = tl.TokenDataset(path, seq_len=16, batch_size=int(batch), seed=5)
    if state_in != "-":
        ds.load_state_dict(json.loads(Path(state_in).read_text()))
    steps: list[list[list[int]]] = []
    state = None
    for b in DataLoader(ds, batch_size=None, num_workers=2):
        ids, labels = b["input_ids"], b["labels"]
        steps.append([[*ids[r].tolist(), int(labels[r, -1])] for r in range(ids.shape[0])])
        if len(steps) == int(stop):
            state = ds.state_dict(consumed_batches=len(steps))
    gathered: list[object] = [None] * world
    dist.all_gather_object(gathered, {"rank": rank, "steps": steps})
    if rank == 0:
        Path(out).write_text(json.dumps({"world": world, "ranks": gathered, "state": state}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
