"""A training loop without a model, for ``test_kill_resume.py``: reads ``EPOCHS`` epochs of a
dataset through a DataLoader with 2 workers, logs a hash of every batch, and after each step
writes a checkpoint (the loader state and the hashes so far) atomically: temporary file,
fsync, rename. Started again after being killed, it continues from the last checkpoint; at the
end it writes ``DIR/done.json`` with every hash in order.

Usage: ``python train_worker.py DATASET DIR EPOCHS``; prints ``step N`` after each step.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tokenloom as tl
from torch.utils.data import DataLoader


def save_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def main() -> None:
    data, run, epochs = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    ckpt_path = run / "checkpoint.json"
    ckpt = json.loads(ckpt_path.read_text()) if ckpt_path.exists() else None
    hashes: list[str] = ckpt["hashes"] if ckpt else []
    state: dict[str, Any] | None = ckpt["state"] if ckpt else None
    ds = tl.TokenDataset(data, seq_len=16, batch_size=3, seed=21)
    epoch = state["epoch"] if state else 0
    while epoch < epochs:
        if state is None:
            ds.set_epoch(epoch)
        else:
            ds.load_state_dict(state)
        for k, b in enumerate(DataLoader(ds, batch_size=None, num_workers=2), start=1):
            h = hashlib.sha256()
            for key in ("input_ids", "labels", "position_ids"):
                h.update(np.ascontiguousarray(b[key].numpy()).tobytes())
            hashes.append(h.hexdigest())
            save_atomic(ckpt_path, {"state": ds.state_dict(consumed_batches=k), "hashes": hashes})
            print(f"step {len(hashes)}", flush=True)
        epoch += 1
        state = None
    save_atomic(run / "done.json", hashes)


if __name__ == "__main__":
    main()
