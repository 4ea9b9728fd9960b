"""The benchmark corpus, and writers that store it in each contender's own format
(tokenloom shards, nanoGPT .bin, Megatron .bin/.idx, LitData, MosaicML MDS, HF Arrow).
Used by ``loader_bench.py``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

EOS = 50256
VOCAB = EOS + 1
SEQ = 2048
WIN = SEQ + 1


def make_corpus(n_tokens: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens (uint16, every document ending in EOS) and document lengths."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(600), 1.05, size=n_tokens // 300), 2, 50_000)
    lengths = lengths.astype(np.int64)
    lengths = lengths[np.cumsum(lengths) <= n_tokens]
    rest = n_tokens - int(lengths.sum())
    if rest >= 2:
        lengths = np.append(lengths, rest)
    tokens = rng.integers(0, EOS, size=int(lengths.sum()), dtype=np.uint16)
    tokens[np.cumsum(lengths) - 1] = EOS
    return tokens, lengths


def write_tokenloom(tokens: np.ndarray, lengths: np.ndarray, out: Path) -> None:
    import tokenloom as tl

    with tl.DatasetWriter(out, eos_id=EOS, vocab_size=VOCAB, overwrite=True) as w:
        w.add_many_flat(tokens, lengths.astype(np.uint64))


def write_nanogpt(tokens: np.ndarray, lengths: np.ndarray, out: Path) -> None:
    out.mkdir(parents=True)
    tokens.tofile(out / "train.bin")


def write_megatron(tokens: np.ndarray, lengths: np.ndarray, out: Path) -> None:
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    out.mkdir(parents=True)
    builder = IndexedDatasetBuilder(str(out / "train.bin"), dtype=np.uint16)
    ends = np.cumsum(lengths)
    for start, end in zip(ends - lengths, ends, strict=True):
        builder.add_document(tokens[start:end], [int(end - start)])
    builder.finalize(str(out / "train.idx"))


def _blocks(tokens: np.ndarray) -> np.ndarray:
    n = len(tokens) // WIN
    return tokens[: n * WIN].reshape(n, WIN)


def _litdata_items(i: int) -> Any:
    import torch

    tokens = np.load(os.environ["LOADER_BENCH_CORPUS"], mmap_mode="r")
    part = tokens[i * 10_000_000 : (i + 1) * 10_000_000]
    yield torch.from_numpy(np.array(part, dtype=np.uint16))  # the dtype every contender stores


def write_litdata(
    tokens: np.ndarray, lengths: np.ndarray, out: Path, chunk_bytes: int = WIN * 2048 * 2
) -> None:
    """LitData chunks of whole ``WIN``-token blocks, about ``chunk_bytes`` each (uint16)."""
    from litdata import TokensLoader, optimize

    optimize(
        fn=_litdata_items,
        inputs=list(range((len(tokens) + 9_999_999) // 10_000_000)),
        output_dir=str(out),
        chunk_size=WIN * max(1, chunk_bytes // (2 * WIN)),
        item_loader=TokensLoader(),
        num_workers=1,
        verbose=False,
    )


def write_mosaic(
    tokens: np.ndarray, lengths: np.ndarray, out: Path, shard_bytes: int = 1 << 26
) -> None:
    """MDS shards of ``WIN``-token samples, at most ``shard_bytes`` each (MDS's default)."""
    from streaming import MDSWriter

    columns = {"tokens": "ndarray:uint16"}
    with MDSWriter(out=str(out), columns=columns, size_limit=shard_bytes) as w:
        for block in _blocks(tokens):
            w.write({"tokens": block})


def write_hf(tokens: np.ndarray, lengths: np.ndarray, out: Path) -> None:
    import datasets
    import pyarrow as pa

    blocks = _blocks(tokens)
    col = pa.FixedSizeListArray.from_arrays(pa.array(blocks.reshape(-1)), WIN)
    datasets.Dataset(pa.table({"input_ids": col})).save_to_disk(str(out))


WRITERS = {
    "tokenloom": write_tokenloom,
    "nanogpt-memmap": write_nanogpt,
    "megatron-indexed": write_megatron,
    "litdata": write_litdata,
    "mosaic-mds": write_mosaic,
    "hf-arrow": write_hf,
}
