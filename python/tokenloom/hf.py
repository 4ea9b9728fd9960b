"""Online batch selection in the Hugging Face ``Trainer`` (needs ``transformers`` and
``accelerate``: ``pip install tokenloom[hf]``).

``UDSTrainer`` reads candidate batches from a ``TokenDataset``, scores each with a forward pass
without gradients, keeps the rows the selector picks, books them in the dataset's selection
accounting and trains on those rows only (the loss is normalised over the kept tokens)::

    ds = tl.TokenDataset("data/train", seq_len=512, batch_size=32)
    sel = tl.UDSSelector(keep=8)
    trainer = UDSTrainer(model=model, args=args, train_dataset=ds, selector=sel)
    trainer.train()
    ds.selection_stats()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    import torch
    from torch.utils.data import DataLoader
    from transformers import Trainer
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tokenloom.hf needs transformers and accelerate: pip install 'tokenloom[hf]'"
    ) from e

from .loader import TokenDataset
from .rows import take_rows

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .select import UDSSelector

IGNORE = -100  # the label transformers' losses ignore

__all__ = ["UDSTrainer", "model_inputs", "padding_mask"]


def padding_mask(batch: dict[str, Any]) -> Any:
    """1 for real tokens, 0 for padding (from ``doc_ids``; ``None`` when the batch has none)."""
    doc = batch.get("doc_ids")
    return None if doc is None else (doc >= 0).long()


def model_inputs(batch: dict[str, Any], ignore_index: int | None = None) -> dict[str, Any]:
    """A ``TokenDataset`` batch as causal-LM inputs for transformers. Its ``labels`` are
    already the next tokens, so they go in as ``shift_labels`` too, which tells the model's
    loss not to shift them again; labels equal to ``ignore_index`` become -100."""
    labels = batch["labels"].long()
    if ignore_index is not None and ignore_index != IGNORE:
        labels = labels.masked_fill(labels == ignore_index, IGNORE)
    return {"input_ids": batch["input_ids"].long(), "labels": labels, "shift_labels": labels}


class _EpochLoader(DataLoader):  # type: ignore[type-arg]
    """A DataLoader of whole batches that starts each epoch the Trainer asks for."""

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)  # type: ignore[attr-defined]


class UDSTrainer(Trainer):
    """``Trainer`` that trains on the rows ``selector`` keeps from each candidate batch.

    ``train_dataset`` must be a ``TokenDataset`` (its ``batch_size`` is the candidate batch;
    ``per_device_train_batch_size`` is not used). Candidate batches are scored in the model's
    current mode (training, as the reference implementation does). With the dataset's
    ``reoffer_unkept``, unkept samples join later candidate batches. Models must accept
    ``shift_labels`` (transformers' causal LMs do, through their loss keyword arguments).
    """

    def __init__(self, *args: Any, selector: UDSSelector, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.train_dataset, TokenDataset):
            raise TypeError(
                "UDSTrainer reads candidate batches from a tokenloom.TokenDataset; "
                f"got train_dataset of type {type(self.train_dataset).__name__}"
            )
        self.selector = selector
        self.dataset: TokenDataset = self.train_dataset

    def get_train_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        return _EpochLoader(
            self.dataset,
            batch_size=None,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )

    def get_batch_samples(
        self, epoch_iterator: Iterator[Any], num_batches: int, device: Any
    ) -> tuple[list[Any], Any]:
        candidates = self.dataset.candidates(epoch_iterator)
        selected = (self.select_batch(c) for c in candidates)
        return super().get_batch_samples(selected, num_batches, device)

    def select_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Scores ``batch``, books the kept rows and returns them as model inputs."""
        batch = {k: v.to(self.args.device) for k, v in batch.items()}
        model: Any = self.model
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"].long()).logits
        keep = self.selector.select(logits, padding_mask(batch))
        del logits
        self.dataset.record_selection(batch, keep)
        return model_inputs(take_rows(batch, keep), self.dataset.ignore_index)
