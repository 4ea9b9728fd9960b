"""A real corpus that needs no download: the sources of Python's standard library (tests and
IDLE left out), with a small byte-level BPE trained on them, built by ``tokenloom.build`` into a
training and a validation dataset (every 20th file, by path order, is held out).

    python examples/stdlib_corpus.py [OUT]      # default demo-out/stdlib-bpe

The training examples import :func:`prepare`, which builds once and reuses the result.
"""

from __future__ import annotations

import json
import sys
import sysconfig
from pathlib import Path

import tokenloom as tl

EOS = "<|endoftext|>"
HELD_OUT = 20  # every 20th file goes to validation


def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idlelib", "__pycache__"}
    files = sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))
    if not files:
        raise SystemExit(f"no Python sources found under {root}")
    return files


def _write_jsonl(path: Path, files: list[Path]) -> list[str]:
    texts = []
    with path.open("w", encoding="utf-8") as f:
        for p in files:
            text = p.read_text(encoding="utf-8", errors="replace")
            if text.strip():
                texts.append(text)
                f.write(json.dumps({"text": text}) + "\n")
    return texts


def train_tokenizer(texts: list[str], vocab: int, path: Path) -> None:
    """Trains a byte-level BPE of ``vocab`` ids (``EOS`` included) on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.save(str(path))


def exists(path: Path) -> bool:
    """Whether ``path`` opens as a dataset."""
    try:
        tl.open_dataset(path)
    except (OSError, ValueError, tl.TokenloomError):
        return False
    return True


def prepare(out: str | Path = "demo-out/stdlib-bpe", vocab: int = 1024) -> tuple[Path, Path, int]:
    """``(train, val, vocab_size)``: the datasets under ``out``, built when missing."""
    out = Path(out)
    train, val, tok_path = out / "train", out / "val", out / "tokenizer.json"
    if tok_path.exists() and exists(train) and exists(val):
        return train, val, tl.open_dataset(train).vocab_size or vocab
    text_dir = out / "text"
    text_dir.mkdir(parents=True, exist_ok=True)
    files = stdlib_files()
    held = files[::HELD_OUT]
    kept = [p for i, p in enumerate(files) if i % HELD_OUT]
    texts = _write_jsonl(text_dir / "train.jsonl", kept)
    _write_jsonl(text_dir / "val.jsonl", held)
    train_tokenizer(texts, vocab, tok_path)
    for split, dest in (("train", train), ("val", val)):
        tl.build(
            text_dir / f"{split}.jsonl", dest, tokenizer=tok_path, progress=False, overwrite=True
        )
    return train, val, tl.open_dataset(train).vocab_size or vocab


if __name__ == "__main__":
    tr, va, v = prepare(*sys.argv[1:2])
    for path in (tr, va):
        ds = tl.open_dataset(path)
        print(f"{path}: {len(ds):,} documents, {ds.num_tokens:,} tokens, vocabulary {v}")
