"""SelectionTrainer: selection inside the Hugging Face Trainer, on a tiny random GPT-2 (no
download)."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tokenloom as tl
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
from hf_worker import SEQ, VOCAB, tiny_gpt2  # noqa: E402
from tokenloom.hf import STATE_FILE, SelectionTrainer, model_inputs  # noqa: E402

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    with tl.DatasetWriter(tmp_path / "c", "u16", eos_id=0, vocab_size=VOCAB) as w:
        for n in rng.integers(5, 60, size=60):
            w.add(rng.integers(1, VOCAB, size=int(n)))
    return tmp_path / "c"


def resumable_trainer(
    corpus: Path, out: Path, dropout: float = 0.0, accumulation: int = 1
) -> SelectionTrainer:
    """4 steps of a tiny GPT-2, checkpoints every 2, re-offering unkept samples."""
    ds = tl.TokenDataset(corpus, seq_len=SEQ, batch_size=8, seed=1, reoffer_unkept=1)
    sel = tl.BatchSelector(keep=2, buffer_size=16, sketch=(2, 8), max_len=SEQ, seed=0)
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=4, save_steps=2, learning_rate=1e-2, use_cpu=True,
        report_to=[], disable_tqdm=True, gradient_accumulation_steps=accumulation,
    )  # fmt: skip
    model = tiny_gpt2(dropout=dropout)
    return SelectionTrainer(model=model, args=args, train_dataset=ds, selector=sel)


def test_model_inputs_do_not_shift_labels_twice(corpus: Path) -> None:
    ds = tl.TokenDataset(corpus, seq_len=SEQ, batch_size=3, mode="pack", ignore_index=-1)
    b = next(iter(ds))
    model = tiny_gpt2()
    out = model(**model_inputs(b, ds.ignore_index))
    labels = b["labels"].masked_fill(b["labels"] == -1, -100)
    want = torch.nn.functional.cross_entropy(
        out.logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.loss, want)


def test_trainer_trains_on_the_selected_rows(corpus: Path, tmp_path: Path) -> None:
    ds = tl.TokenDataset(corpus, seq_len=SEQ, batch_size=8, seed=1, reoffer_unkept=1)
    sel = tl.BatchSelector(keep=2, buffer_size=16, sketch=(2, 8), max_len=SEQ, seed=0)
    model = tiny_gpt2()
    rows: list[tuple[int, bool]] = []
    # the body runs in both passes (scoring stops before the head)
    model.transformer.register_forward_pre_hook(
        lambda _m, a, kw: rows.append(
            (int((a[0] if a else kw["input_ids"]).shape[0]), torch.is_grad_enabled())
        ),
        with_kwargs=True,
    )
    before = [p.detach().clone() for p in model.parameters()]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=4, learning_rate=1e-2, use_cpu=True,
        report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True,
        gradient_accumulation_steps=2,
    )  # fmt: skip
    trainer = SelectionTrainer(
        model=model, args=args, train_dataset=ds, selector=sel, scoring="hidden"
    )
    result = trainer.train()
    assert np.isfinite(result.training_loss)
    # per optimizer step, 2 micro-batches: scoring forwards without gradients on the
    # candidates, then training on the kept rows; re-offered samples make candidate batches
    # larger than 8
    assert [grad for _, grad in rows] == [False, False, True, True] * 4
    scoring = [n for n, grad in rows if not grad]
    training = [n for n, grad in rows if grad]
    assert training == [2] * 8
    assert min(scoring) == 8
    assert max(scoring) > 8
    stats = ds.selection_stats()
    assert stats["kept"] == 8 * 2
    assert stats["seen"] == sum(scoring)
    assert stats["reoffered"] > 0
    assert sel.state_dict()["count"] == 16
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_trainer_needs_a_token_dataset(tmp_path: Path) -> None:
    args = transformers.TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    with pytest.raises(TypeError, match="TokenDataset"):
        SelectionTrainer(
            model=tiny_gpt2(), args=args, train_dataset=[1, 2], selector=tl.BatchSelector(1)
        )


def test_resume_restores_the_selector_and_the_accounting(corpus: Path, tmp_path: Path) -> None:
    def trainer() -> SelectionTrainer:
        return resumable_trainer(corpus, tmp_path)

    whole = trainer()
    whole.train()
    shutil.rmtree(tmp_path / "checkpoint-4")
    resumed = trainer()
    resumed.train(resume_from_checkpoint=True)  # the latest checkpoint: step 2
    assert resumed.dataset.selection_stats() == whole.dataset.selection_stats()
    assert resumed.dataset.selection_stats()["pending"] > 0
    a, b = whole.selector.state_dict(), resumed.selector.state_dict()
    assert b["count"] == a["count"] == 8
    assert torch.equal(b["rows"], a["rows"])

    (tmp_path / "checkpoint-2" / STATE_FILE.format(rank=0)).unlink()
    with pytest.raises(ValueError, match=r"tokenloom_state_0\.pt is missing"):
        trainer().train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))


def test_global_selection_needs_the_loss_over_all_ranks_tokens(
    corpus: Path, tmp_path: Path
) -> None:
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to=[], average_tokens_across_devices=False
    )
    ds = tl.TokenDataset(corpus, seq_len=SEQ, batch_size=8)
    sel = tl.BatchSelector(2, scope="global")
    with pytest.raises(ValueError, match="average_tokens_across_devices=True"):
        SelectionTrainer(model=tiny_gpt2(), args=args, train_dataset=ds, selector=sel)


def test_resume_is_exact_with_dropout(corpus: Path, tmp_path: Path) -> None:
    """Scoring passes run in training mode, so dropout draws random numbers in them. A resumed
    run scores before the Trainer restores its RNG state: unless scoring has an RNG of its
    own, it keeps other rows and trains on other dropout masks than the uninterrupted run."""

    def trainer() -> SelectionTrainer:
        return resumable_trainer(corpus, tmp_path, dropout=0.1, accumulation=2)

    whole = trainer()
    whole.train()
    shutil.rmtree(tmp_path / "checkpoint-4")
    resumed = trainer()
    resumed.train(resume_from_checkpoint=True)
    assert torch.equal(whole.selector.state_dict()["rows"], resumed.selector.state_dict()["rows"])
    assert resumed.dataset.selection_stats() == whole.dataset.selection_stats()
    for (name, a), b in zip(
        whole.model.named_parameters(), resumed.model.parameters(), strict=True
    ):
        assert torch.equal(a, b), name


def tiny_llama(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ,
        tie_word_embeddings=True,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(cfg)


def test_trainer_with_a_lora_model(corpus: Path, tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = peft.get_peft_model(tiny_llama(), peft.LoraConfig(r=4, target_modules=targets))
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert lora
    assert all("lora_" in n for n in lora)
    ds = tl.TokenDataset(corpus, seq_len=SEQ, batch_size=8, seed=1)
    sel = tl.BatchSelector(keep=2, buffer_size=16, sketch=(2, 8), max_len=SEQ, rule="uds-auto",
                         calibration=2)  # fmt: skip
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=4, learning_rate=1e-2, use_cpu=True, report_to=[],
        save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    trainer = SelectionTrainer(model=model, args=args, train_dataset=ds, selector=sel)
    assert trainer.scorer.path == "hidden", trainer.scorer.reason
    result = trainer.train()
    assert np.isfinite(result.training_loss)
    assert trainer.scorer.path == "hidden"  # the first batch's check passed
    assert ds.selection_stats()["kept"] == 8
    assert sel.effective_alpha() > 0  # calibrated on the batches after the first
    after = dict(model.named_parameters())
    assert all(torch.equal(p, after[n]) for n, p in frozen.items())
    assert any(not torch.equal(p, after[n]) for n, p in lora.items())


def test_trainer_refuses_what_it_cannot_score(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = transformers.TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    ds = tl.TokenDataset(corpus, seq_len=SEQ, batch_size=8)
    with pytest.raises(ValueError, match="max-loss"):
        SelectionTrainer(
            model=tiny_gpt2(),
            args=args,
            train_dataset=ds,
            selector=tl.BatchSelector(2, rule="max-loss"),
        )
    original = transformers.Trainer.create_accelerator_and_postprocess

    def with_fsdp(self: Any) -> None:  # what an FSDP launch configures
        original(self)
        self.is_fsdp_enabled = True

    monkeypatch.setattr(transformers.Trainer, "create_accelerator_and_postprocess", with_fsdp)
    with pytest.raises(ValueError, match="does not support FSDP"):
        SelectionTrainer(
            model=tiny_gpt2(), args=args, train_dataset=ds, selector=tl.BatchSelector(2)
        )


def test_a_calibration_window_longer_than_the_run_is_refused(corpus: Path, tmp_path: Path) -> None:
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=3, use_cpu=True, report_to=[], save_strategy="no"
    )
    ds = tl.TokenDataset(corpus, seq_len=SEQ, batch_size=8)
    sel = tl.BatchSelector(2, rule="uds-auto", calibration=8, sketch=(2, 8), max_len=SEQ)
    trainer = SelectionTrainer(model=tiny_gpt2(), args=args, train_dataset=ds, selector=sel)
    with pytest.raises(ValueError, match=r"longer than the run \(3 candidate batches\)"):
        trainer.train()
