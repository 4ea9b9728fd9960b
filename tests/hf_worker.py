"""One rank of ``test_hf_distributed.py``, started by ``torchrun`` (gloo, CPU): trains a tiny
random GPT-2 with ``SelectionTrainer`` and writes, per rank, every candidate batch the selector saw
(rows, sample ids, rows kept, utilities and sketches), the selection stats and a digest of
the trained parameters to ``OUT/rank<r>.json``, and the parameters to ``OUT/params<r>.pt``.
Plain SGD at a constant learning rate without clipping: one step moves the parameters by
``-LR`` times the gradient, which a test can replay in one process.

Usage: ``torchrun --nproc-per-node N hf_worker.py DATASET OUT SCOPE SAVE_STEPS RESUME|-``
(``SAVE_STEPS`` 0: no checkpoints; ``RESUME``: a checkpoint to resume from).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tokenloom as tl
import torch
import transformers
from tokenloom.hf import SelectionTrainer, padding_mask

if TYPE_CHECKING:
    import numpy as np

VOCAB = 64
SEQ = 16
BATCH = 8  # candidates per rank and step
KEEP = 2  # kept rows per step: per rank (scope "rank") or over all ranks (scope "global")
LR = 0.5


def tiny_gpt2(seed: int = 0, dropout: float = 0.0) -> Any:
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=SEQ, n_embd=32, n_layer=2, n_head=2,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
    )  # fmt: skip
    return transformers.GPT2LMHeadModel(cfg)


def dataset(path: str, **kw: Any) -> tl.TokenDataset:
    kw = {"batch_size": BATCH, "seed": 3, "reoffer_unkept": 1, **kw}
    return tl.TokenDataset(path, seq_len=SEQ, **kw)


def selector(scope: str) -> tl.BatchSelector:
    return tl.BatchSelector(
        keep=KEEP, buffer_size=16, sketch=(2, 8), max_len=SEQ, seed=0, scope=scope
    )


class Recording(tl.BatchSelector):
    """A selector that remembers the utilities and sketches of this rank's candidates."""

    def __init__(self, scope: str) -> None:
        base = selector(scope)
        super().__init__(
            base.keep,
            base.buffer_size,
            alpha=base.alpha,
            sketch=base.sketch_size,
            seed=base.seed,
            rule=base.rule,
            max_len=base.max_len,
            scope=scope,
        )
        self.seen: list[dict[str, Any]] = []

    def select_from(self, utility: Any, sketches: Any | None = None) -> np.ndarray:
        self.seen.append(
            {"utility": utility.tolist(), "sketches": sketches.tolist()}  # type: ignore[union-attr]
        )
        return super().select_from(utility, sketches)


def digest(model: Any) -> str:
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    path, out, scope, save, resume = sys.argv[1:6]
    ds = dataset(path)
    sel = Recording(scope)
    batches: list[dict[str, Any]] = []
    record = ds.record_selection

    def spy(batch: dict[str, Any], kept: Any) -> None:
        mask = padding_mask(batch)
        batches.append(
            {
                "input_ids": batch["input_ids"].tolist(),
                "labels": batch["labels"].tolist(),
                "mask": None if mask is None else mask.tolist(),
                "samples": batch["sample_ids"].tolist(),
                "fresh": (batch["offered_before"] == 0).tolist(),
                "kept": kept.tolist(),
            }
        )
        record(batch, kept)

    ds.record_selection = spy  # type: ignore[method-assign]
    args = transformers.TrainingArguments(
        output_dir=str(Path(out) / "run"), num_train_epochs=1, seed=0, optim="sgd",
        learning_rate=LR, lr_scheduler_type="constant", max_grad_norm=0.0,
        use_cpu=True, ddp_backend="gloo", ddp_find_unused_parameters=False,
        report_to=[], disable_tqdm=True,
        save_strategy="steps" if int(save) else "no", save_steps=max(1, int(save)),
    )  # fmt: skip
    trainer = SelectionTrainer(model=tiny_gpt2(), args=args, train_dataset=ds, selector=sel)
    result = trainer.train(resume_from_checkpoint=None if resume == "-" else resume)
    rank = args.process_index
    report = {
        "rank": rank,
        "world": args.world_size,
        "global_step": result.global_step,
        "batches": [{**b, **s} for b, s in zip(batches, sel.seen, strict=True)],
        "stats": ds.selection_stats(),
        "params": digest(trainer.model),
    }
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(report))
    params = {n: p.detach() for n, p in trainer.model.named_parameters()}
    torch.save(params, Path(out) / f"params{rank}.pt")


if __name__ == "__main__":
    main()
