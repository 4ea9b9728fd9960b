"""Training with the Hugging Face ``Trainer`` (needs ``transformers`` and ``accelerate``:
``pip install tokenloom[hf]``).

A plain ``Trainer`` reads samples one at a time and batches them itself, and transformers'
causal LMs shift ``labels`` by one inside their loss. ``TrainerRows`` gives it a
``TokenDataset``'s rows in that convention, so the targets are shifted exactly once::

    ds = tl.TokenDataset("data/train", seq_len=512, batch_size=64, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=TrainerRows(ds))

A ``TokenDataset`` given to a ``Trainer`` directly fails at the first batch, naming this.

``SelectionTrainer`` reads candidate batches from a ``TokenDataset``, scores each with a forward
pass without gradients, keeps the rows the selector picks, books them in the dataset's selection
accounting and trains on those rows only (the loss is normalised over the kept tokens)::

    ds = tl.TokenDataset("data/train", seq_len=512, batch_size=32)
    sel = tl.BatchSelector(keep=8)
    trainer = SelectionTrainer(model=model, args=args, train_dataset=ds, selector=sel)
    trainer.train()
    ds.selection_stats()

Under ``torchrun``/``accelerate launch`` every rank reads its own share of the candidate
batches (the dataset splits them by rank; the Trainer does not re-shard them), selects from
them (or across ranks with ``BatchSelector(scope="global")``) and DDP averages the gradients.
Checkpoints hold, per rank, the selector's and the dataset's state (``tokenloom_state_<rank>.pt``,
next to the RNG state), so ``train(resume_from_checkpoint=...)`` continues with the same
memory, re-offer queue and selection counts on the same number of ranks.

Scoring stops before the LM head when the head is a plain linear map (no bias, soft-cap or
scale; checked once against the model's own logits): utility and sketch come from the final
hidden states through a ``d x d`` factor of the head (``tokenloom.select_head``), also for
``peft`` models. FSDP is refused: the hidden-state path needs the whole head weight on each
rank and runs the model's body outside the root module's forward, which FSDP's unsharding
hooks do not cover.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

import numpy as np

try:
    import torch
    from torch.utils.data import DataLoader, IterableDataset
    from transformers import Trainer
    from transformers.trainer_utils import TrainOutput, get_last_checkpoint
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "tokenloom.hf needs transformers and accelerate: pip install 'tokenloom[hf]'"
    ) from e

from ._renamed import renamed_names
from .loader import TokenDataset
from .rows import take_rows
from .select_head import ModelScorer

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .select import BatchSelector

IGNORE = -100  # the label transformers' losses ignore
STATE_FILE = "tokenloom_state_{rank}.pt"  # per rank, in each checkpoint folder

__all__ = ["SelectionTrainer", "TrainerRows", "model_inputs", "padding_mask"]


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


class TrainerRows(IterableDataset):  # type: ignore[type-arg]
    """The rows of ``dataset`` one at a time, as ``transformers.Trainer`` reads a dataset.

    Each item holds ``input_ids`` and ``labels`` of one row (``seq_len`` tokens) in
    transformers' convention: ``labels`` line up with ``input_ids`` and the model shifts them
    (so each row trains ``seq_len - 1`` predictions; the loader's last label of the row is
    not used). The dataset's ``ignore_index`` labels and padding become -100. The Trainer
    batches the rows (``per_device_train_batch_size``), calls :meth:`set_epoch` each epoch,
    and on ``resume_from_checkpoint`` skips the batches it trained on, which gives the same
    rows again since the stream is a function of seed and epoch.

    With ``position_ids=True`` items also carry ``position_ids``, restarting at 0 at every
    document piece. That is the varlen path: with ``attn_implementation=
    "flash_attention_2"`` and no ``attention_mask``, transformers reads the restarts as
    sequence boundaries, so each document attends only to itself. Other attention
    implementations attend across the whole row whatever the positions: leave it off there.

    The rows are the whole stream (rank 0 of 1): under ``torchrun``/``accelerate launch``
    accelerate shards them across ranks itself, so ``dataset`` must not be made with
    ``rank=``/``world_size=``. DataLoader workers (``dataloader_num_workers``) are fine.
    """

    def __init__(self, dataset: TokenDataset, *, position_ids: bool = False) -> None:
        if not isinstance(dataset, TokenDataset):
            raise TypeError(f"TrainerRows reads a TokenDataset, got {type(dataset).__name__}")
        if dataset.rank not in (None, 0) or dataset.world_size not in (None, 1):
            raise ValueError(
                "the Trainer shards the rows across ranks itself (accelerate): make the "
                "TokenDataset without rank= and world_size= (TrainerRows reads the whole stream)"
            )
        if position_ids and "position_ids" not in dataset.outputs:
            raise ValueError("position_ids=True needs position_ids in the TokenDataset's outputs")
        self.dataset = dataset
        self.position_ids = position_ids

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        """Rows in the rest of the current epoch."""
        ds = self.dataset
        position = ds._cursor[1]
        if not ds.drop_last:
            return ds.samples_per_epoch - position
        batches = ds._get_stream().batches_left(position, ds.batch_size, 0, 1, True)
        return batches * ds.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        ignore = self.dataset.ignore_index
        for batch in self.dataset._batches(0, 1):
            ids = torch.as_tensor(batch["input_ids"]).long()
            labels = torch.full_like(ids, IGNORE)
            labels[:, 1:] = torch.as_tensor(batch["labels"])[:, :-1]
            if ignore is not None and ignore != IGNORE:
                labels.masked_fill_(labels == ignore, IGNORE)
            for r in range(ids.shape[0]):
                row = {"input_ids": ids[r], "labels": labels[r]}
                if self.position_ids:
                    row["position_ids"] = torch.as_tensor(batch["position_ids"])[r].long()
                yield row


class _EpochLoader(DataLoader):  # type: ignore[type-arg]
    """A DataLoader of whole batches that starts each epoch the Trainer asks for."""

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)  # type: ignore[attr-defined]


def _cuda_devices(device: Any) -> list[Any]:
    """The CUDA devices whose RNG a fork must save (none on CPU)."""
    dev = torch.device(device)
    return [dev] if dev.type == "cuda" else []


@contextlib.contextmanager
def _seeded_fork(seed: int, step: int, batch: int, device: Any) -> Iterator[None]:
    """A forked RNG seeded from ``(seed, step, batch)``; the outer RNG is left as it was."""
    with torch.random.fork_rng(devices=_cuda_devices(device)):
        torch.manual_seed(((seed * 1_000_003 + step) * 1_009 + batch) % 2**63)
        yield


class SelectionTrainer(Trainer):
    """``Trainer`` that trains on the rows ``selector`` keeps from each candidate batch.

    ``train_dataset`` must be a ``TokenDataset`` (its ``batch_size`` is the candidate batch;
    ``per_device_train_batch_size`` is not used). Candidate batches are scored in the model's
    current mode (training, as the reference implementation does). With the dataset's
    ``reoffer_unkept``, unkept samples join later candidate batches. Models must accept
    ``shift_labels`` (transformers' causal LMs do, through their loss keyword arguments).

    ``scoring``: ``"auto"`` (from the hidden states where the head allows it, else from the
    logits), ``"hidden"`` (raise where it does not) or ``"logits"``. Scoring passes run under
    their own RNG, seeded from ``args.seed`` and the step, so dropout in them neither depends
    on nor moves the training RNG: a resumed run scores and trains as the uninterrupted one.
    """

    def __init__(
        self, *args: Any, selector: BatchSelector, scoring: str = "auto", **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if getattr(self, "is_fsdp_enabled", False):
            raise ValueError(
                "SelectionTrainer does not support FSDP: scoring reads the whole output layer on "
                "each rank and runs the model's body outside FSDP's root forward; train with "
                "DDP (torchrun without fsdp) instead"
            )
        if not isinstance(self.train_dataset, TokenDataset):
            raise TypeError(
                "SelectionTrainer reads candidate batches from a tokenloom.TokenDataset; "
                f"got train_dataset of type {type(self.train_dataset).__name__}"
            )
        if selector.scope == "global" and not self.args.average_tokens_across_devices:
            raise ValueError(
                'BatchSelector(scope="global") keeps different numbers of rows on each rank, '
                "so the loss must be normalised by the kept tokens of all ranks: set "
                "TrainingArguments(average_tokens_across_devices=True)"
            )
        if selector.rule == "max-loss":
            raise ValueError(
                'SelectionTrainer scores candidates from the model; rule "max-loss" ranks '
                "per-sample losses: use BatchSelector.select_from in a custom loop"
            )
        self.selector = selector
        self.scorer = ModelScorer(self.model, selector, path=scoring)
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
        step = self.state.global_step
        selected = (self.select_batch(c, (step, i)) for i, c in enumerate(candidates))
        return super().get_batch_samples(selected, num_batches, device)

    def select_batch(
        self, batch: dict[str, Any], position: tuple[int, int] = (0, 0)
    ) -> dict[str, Any]:
        """Scores ``batch``, books the kept rows and returns them as model inputs.
        ``position`` (optimizer step, candidate batch within it) seeds the scoring RNG."""
        batch = {k: v.to(self.args.device) for k, v in batch.items()}
        ids = batch["input_ids"].long()
        if self.selector.rule == "random":  # needs no scores
            kept = self.selector.select_from(np.zeros(ids.shape[0], np.float32))
        else:
            with self._scoring_rng(position):
                utility, sketches = self.scorer.scores(ids, mask=padding_mask(batch))
            kept = self.selector.select_from(utility, sketches)
        keep = torch.from_numpy(kept).to(ids.device)
        self.dataset.record_selection(batch, keep)
        if keep.numel() == 0:
            # With scope="global" a rank may keep none of its rows. It still takes part in
            # the step (DDP reduces gradients on every rank), with one row and no labels.
            inputs = model_inputs(take_rows(batch, [0]), self.dataset.ignore_index)
            inputs["labels"] = inputs["shift_labels"] = torch.full_like(inputs["labels"], IGNORE)
            return inputs
        return model_inputs(take_rows(batch, keep), self.dataset.ignore_index)

    def _scoring_rng(self, position: tuple[int, int]) -> Any:
        """A forked RNG seeded by (``args.seed``, step, batch): dropout in the scoring pass
        is reproducible and leaves the training RNG where it was."""
        return _seeded_fork(self.args.seed, *position, self.args.device)

    # -- checkpoints ----------------------------------------------------------------------

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
    ) -> TrainOutput:
        """``Trainer.train``; resuming also restores the selector and the dataset's selection
        accounting saved with the checkpoint."""
        if self.args.max_steps > 0:  # the run's candidate batches (per rank)
            self.selector.check_run(self.args.max_steps * self.args.gradient_accumulation_steps)
        if resume_from_checkpoint is True:
            last = get_last_checkpoint(self.args.output_dir)  # type: ignore[no-untyped-call]
            resume_from_checkpoint = last or True  # none: the Trainer says so
        if isinstance(resume_from_checkpoint, str):
            self._load_selection_state(resume_from_checkpoint)
        return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval)

    def _save_rng_state(self, output_dir: str) -> None:
        # The Trainer saves the RNG state on every rank with each resumable checkpoint.
        super()._save_rng_state(output_dir)
        # The Trainer skips the batches it trained on itself, so the epoch's start is saved
        # (consumed_batches=0: also exact when DataLoader workers read the dataset).
        dataset = self.dataset.state_dict(consumed_batches=0)
        state = {"selector": self.selector.state_dict(), "dataset": dataset}
        path = os.path.join(output_dir, STATE_FILE.format(rank=self.args.process_index))
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _load_selection_state(self, checkpoint: str) -> None:
        path = os.path.join(checkpoint, STATE_FILE.format(rank=self.args.process_index))
        if not os.path.isfile(path):
            raise ValueError(
                f"{path} is missing: the checkpoint holds no selection state for rank "
                f"{self.args.process_index} (saved by another number of ranks, with "
                "save_only_model, or by a plain Trainer); resume on as many ranks as saved it"
            )
        state = torch.load(path, weights_only=True)
        self.selector.load_state_dict(state["selector"])
        self.dataset.load_state_dict(state["dataset"])
        # The Trainer itself skips the batches it already trained on in this epoch, so the
        # stream restarts at the epoch's beginning (only the selection accounting carries over).
        self.dataset.set_epoch(int(state["dataset"]["epoch"]))


__getattr__ = renamed_names(
    __name__,
    {"UDSTrainer": ("SelectionTrainer", "its selector's rules include baselines that are not UDS")},
    globals(),
)
