"""Writing and opening token datasets (the Rust core does the work)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tokenloom import _core

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType

    import numpy.typing as npt

__all__ = ["DatasetWriter", "open_dataset"]


def open_dataset(
    path: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_limit: int | None = None,
    storage_options: dict[str, str] | None = None,
) -> _core.Dataset:
    """Opens a dataset: a directory holding ``manifest.json``, a raw token file indexed
    by ``tokenloom index``, a Megatron ``.bin``/``.idx`` pair (either file or their path
    prefix), or a datatrove ``.ds`` file (or a directory of them), read in place. Opening
    maps the shards and checks their headers and sizes: O(shards), whatever the number of
    tokens. ``ds[i]`` is a read-only numpy view of document ``i`` straight from the map.

    ``path`` may also be a URL (``s3://``, ``gs://``, ``az://``, ``http(s)://``,
    ``file://``): the manifest and indexes are fetched and checked, and each shard is fetched
    into the local cache (``cache_dir``, default ``TOKENLOOM_CACHE_DIR`` or
    ``~/.cache/tokenloom/remote``; at most ``cache_limit`` bytes, default
    ``TOKENLOOM_CACHE_LIMIT`` or 64 GiB) when first read. Credentials and endpoints come from
    the store's usual environment variables (``AWS_*``, ``GOOGLE_*``, ``AZURE_*``), and
    ``storage_options`` (the store's own option names, e.g. ``{"aws_endpoint": ...}``)."""
    return _core.Dataset(
        os.fspath(path),
        cache_dir=None if cache_dir is None else os.fspath(cache_dir),
        cache_limit=cache_limit,
        storage_options=storage_options,
    )


def _as_doc(tokens: Any) -> npt.NDArray[Any]:
    arr = np.asarray(tokens)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.integer):
        if arr.size == 0:
            return np.zeros(0, dtype=np.uint32)
        raise ValueError(f"tokens must be integers, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr)


class DatasetWriter:
    """Writes a dataset directory, atomically.

    ``add`` appends documents; ``close`` (or leaving the ``with`` block) commits them by
    writing the manifest last. Leaving the block through an exception, Ctrl-C included,
    aborts: the previous dataset at ``path`` (if any) is left exactly as it was.

    Args:
        path: dataset directory to create.
        dtype: ``"u16"`` (vocabularies up to 65,536) or ``"u32"``.
        eos_id: end-of-document token id, recorded in the manifest.
        vocab_size: when given, every token must be below it.
        tokenizer: tokenizer fingerprint recorded in the manifest.
        shard_bytes: shards roll over before growing past this size (default 1 GiB).
        overwrite: replace an existing dataset at ``path`` (atomically).
        compression: ``"zstd"`` stores each shard body as a zstd frame (readers decompress it
            once into the local cache); ``None`` (default) writes plain token files.
        cache_dir, storage_options: for a URL ``path`` (``s3://...``): the dataset is staged
            under the cache directory and uploaded on ``close``, its manifest last, so readers
            never see a partial dataset; see :func:`open_dataset`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        dtype: Literal["u16", "u32", "uint16", "uint32"] = "u16",
        *,
        eos_id: int | None = None,
        vocab_size: int | None = None,
        tokenizer: str | None = None,
        shard_bytes: int = 1 << 30,
        overwrite: bool = False,
        compression: Literal["zstd"] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        storage_options: dict[str, str] | None = None,
    ) -> None:
        self._w = _core.DatasetWriter(
            os.fspath(path),
            dtype=dtype,
            eos_id=eos_id,
            vocab_size=vocab_size,
            tokenizer=tokenizer,
            shard_bytes=shard_bytes,
            overwrite=overwrite,
            compression=compression,
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            storage_options=storage_options,
        )

    def add(self, tokens: Any) -> None:
        """Appends documents: a 1-D array or list of ints is one document; a 2-D array
        is one document per row; any other iterable is a sequence of documents."""
        if isinstance(tokens, np.ndarray):
            if tokens.ndim == 1:
                self._w.add(_as_doc(tokens))
                return
            if tokens.ndim == 2:
                rows, cols = tokens.shape
                flat = _as_doc(tokens.reshape(-1))
                self._w.add_many(flat, np.full(rows, cols, dtype=np.uint64))
                return
            raise ValueError(
                f"tokens must be 1-D (one document) or 2-D (rows), got {tokens.ndim}-D"
            )
        if isinstance(tokens, (list, tuple)) and all(
            isinstance(t, (int, np.integer)) for t in tokens
        ):
            self._w.add(_as_doc(np.asarray(tokens, dtype=np.int64)))
            return
        if isinstance(tokens, (str, bytes)):
            raise ValueError("tokens must be integers; tokenize text first")
        self.add_many(tokens)

    def add_many(self, docs: Iterable[Any]) -> None:
        """Appends each document of ``docs`` (arrays or lists of ints)."""
        for doc in docs:
            if isinstance(doc, np.ndarray) and doc.ndim == 1:
                self._w.add(_as_doc(doc))
            elif isinstance(doc, (list, tuple)):
                self._w.add(_as_doc(np.asarray(doc, dtype=np.int64)))
            else:
                arr = np.asarray(doc)
                if arr.ndim != 1:
                    raise ValueError(f"each document must be 1-D, got shape {arr.shape}")
                self._w.add(_as_doc(arr))

    def add_many_flat(self, tokens: npt.ArrayLike, lengths: npt.ArrayLike) -> None:
        """Appends many documents at once: ``tokens`` concatenated, ``lengths[i]`` tokens
        each. The fastest path: one call for any number of documents."""
        self._w.add_many(_as_doc(tokens), np.ascontiguousarray(lengths, dtype=np.uint64))

    def close(self) -> dict[str, int]:
        """Commits the dataset and returns its totals."""
        return self._w.close()

    def abort(self) -> None:
        """Drops everything written; a previous dataset at the path stays intact."""
        self._w.abort()

    @property
    def num_docs(self) -> int:
        return self._w.num_docs

    @property
    def num_tokens(self) -> int:
        return self._w.num_tokens

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
