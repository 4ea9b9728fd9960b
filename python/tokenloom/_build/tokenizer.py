"""Tokenizers for a build: a tokenizer.json, a tokenizers.Tokenizer or a callable, as a
picklable spec."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

from tokenloom._build.errors import BuildInputError

_EOS_NAMES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eos|>")


# ---------------------------------------------------------------------------------------------
# Tokenizers


@dataclass(frozen=True)
class TokSpec:
    """What a worker needs to rebuild the tokenizer: picklable."""

    kind: Literal["hf", "callable", "none"]
    payload: Any
    vocab_size: int
    eos_id: int
    fingerprint: str | None
    append_eos: bool

    @property
    def dtype(self) -> Literal["u16", "u32"]:
        return "u16" if self.vocab_size <= 65536 else "u32"


class Encoder:
    def __init__(self, spec: TokSpec) -> None:
        self.spec = spec
        self._hf: Any = None
        self._fn: Callable[[str], Sequence[int]] | None = None
        if spec.kind == "hf":
            from tokenizers import Tokenizer

            self._hf = Tokenizer.from_str(spec.payload)
        elif spec.kind == "callable":
            self._fn = spec.payload

    def encode(self, texts: list[str]) -> list[Sequence[int]]:
        if self._hf is not None:
            encs = self._hf.encode_batch_fast(texts, add_special_tokens=False)
            return [e.ids for e in encs]
        if self._fn is not None:
            return [self._fn(t) for t in texts]
        raise BuildInputError("text input needs a tokenizer; pass tokenizer=")


def _canonical_json(text: str) -> bytes:
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":")).encode()


def resolve_tokenizer(
    tokenizer: Any, eos_id: int | None, vocab_size: int | None, append_eos: bool
) -> TokSpec:
    if tokenizer is None:
        if vocab_size is None:
            raise ValueError("without a tokenizer (token inputs only) pass vocab_size=")
        if append_eos and eos_id is None:
            raise ValueError("pass eos_id= (or append_eos=False)")
        return TokSpec(
            "none", None, vocab_size, -1 if eos_id is None else eos_id, None, append_eos
        )
    if isinstance(tokenizer, (str, os.PathLike)):
        from tokenizers import Tokenizer

        path = os.fspath(tokenizer)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            hf = Tokenizer.from_str(text)
        except (OSError, ValueError, Exception) as e:
            raise ValueError(f"{path}: cannot load the tokenizer ({e})") from e
    elif type(tokenizer).__module__.startswith("tokenizers") and hasattr(tokenizer, "to_str"):
        hf = tokenizer
        text = hf.to_str()
    elif callable(tokenizer):
        name = f"{getattr(tokenizer, '__module__', '?')}.{getattr(tokenizer, '__qualname__', '?')}"
        vocab = vocab_size if vocab_size is not None else getattr(tokenizer, "vocab_size", None)
        if vocab is None:
            raise ValueError(f"tokenizer {name} is a callable: pass vocab_size=")
        if append_eos and eos_id is None:
            raise ValueError(f"tokenizer {name} is a callable: pass eos_id= (or append_eos=False)")
        digest = hashlib.sha256(f"{name}\0{vocab}".encode()).hexdigest()[:32]
        return TokSpec(
            "callable", tokenizer, int(vocab), -1 if eos_id is None else eos_id,
            f"callable:{name}:{digest}", append_eos,
        )  # fmt: skip
    else:
        raise TypeError(
            "tokenizer must be a tokenizer.json path, a tokenizers.Tokenizer or a callable "
            f"str -> list[int], got {type(tokenizer).__name__}"
        )
    vocab = vocab_size if vocab_size is not None else hf.get_vocab_size(with_added_tokens=True)
    if eos_id is None and append_eos:
        for name in _EOS_NAMES:
            found = hf.token_to_id(name)
            if found is not None:
                eos_id = int(found)
                break
        else:
            raise ValueError(
                f"the tokenizer has none of the end-of-document tokens {', '.join(_EOS_NAMES)}; "
                "pass eos_id= (or append_eos=False)"
            )
    fp = "tokenizers:sha256:" + hashlib.sha256(_canonical_json(text)).hexdigest()[:32]
    return TokSpec(
        "hf", text, int(vocab), -1 if eos_id is None else eos_id, fp, append_eos
    )  # fmt: skip
