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
    return _core.open_dataset(
        os.fspath(path),
        cache_dir=None if cache_dir is None else os.fspath(cache_dir),
        cache_limit=cache_limit,
        storage_options=storage_options,
    )


def _is_int(t: Any) -> bool:
    """Whether ``t`` is an integer token: a Python or numpy integer, not a bool."""
    return (type(t) is int) or isinstance(t, np.integer)


def _not_integer(doc: int, pos: int, value: Any) -> ValueError:
    return ValueError(
        f"document {doc}: the token at position {pos} is {value!r} "
        f"({type(value).__name__}), not an integer; tokens must be integer ids "
        "(nothing is rounded or converted: convert them explicitly first)"
    )


def _as_doc(tokens: Any, doc: int) -> npt.NDArray[Any]:
    """``tokens`` (one document) as a contiguous 1-D integer array. Anything that is not an
    integer (a float, a bool, a string, a nested list) is refused, naming document ``doc``
    and the position: a silently rounded token would be training data nobody wrote."""
    if isinstance(tokens, (list, tuple)):
        bad = next((i for i, t in enumerate(tokens) if not _is_int(t)), None)
        if bad is not None:
            raise _not_integer(doc, bad, tokens[bad])
        if not tokens:
            return np.zeros(0, dtype=np.uint32)
        try:
            arr = np.asarray(tokens)
        except OverflowError as e:
            raise ValueError(f"document {doc}: a token does not fit 64 bits ({e})") from e
        if arr.dtype == object:  # integers beyond 64 bits
            pos = next(i for i, t in enumerate(tokens) if not -(1 << 63) <= t < (1 << 64))
            raise ValueError(
                f"document {doc}: the token at position {pos} ({tokens[pos]}) does not fit 64 bits"
            )
        return arr
    arr = np.asarray(tokens)
    if arr.dtype.kind in "iu":
        return np.ascontiguousarray(arr)
    if arr.size == 0 and arr.dtype.kind == "f":  # np.asarray([]) is float64
        return np.zeros(0, dtype=np.uint32)
    flat = arr.reshape(-1)
    bad = next((i for i, t in enumerate(flat.tolist()) if not _is_int(t)), 0)
    raise _not_integer(doc, bad, flat[bad].item() if hasattr(flat[bad], "item") else flat[bad])


def _dtype_name(dtype: Any) -> str:
    """``dtype`` as the writer's name for it: ``"u16"``/``"u32"`` (and ``"uint16"``/
    ``"uint32"``) pass through; numpy dtypes and their names are read as such."""
    if isinstance(dtype, str) and dtype in ("u16", "u32", "uint16", "uint32"):
        return dtype
    try:
        name = str(np.dtype(dtype).name)
    except TypeError:
        name = ""
    if name in ("uint16", "uint32"):
        return name
    raise ValueError(
        f'dtype must be "u16" or "u32" (or np.uint16 / np.uint32), got {dtype!r}; token ids are '
        "unsigned: u16 holds vocabularies up to 65,536, u32 any other"
    )


class DatasetWriter:
    """Writes a dataset directory, atomically.

    ``add`` appends documents; ``close`` (or leaving the ``with`` block) commits them by
    writing the manifest last. Leaving the block through an exception, Ctrl-C included,
    aborts: the previous dataset at ``path`` (if any) is left exactly as it was.

    Args:
        path: dataset directory to create.
        dtype: ``"u16"`` (vocabularies up to 65,536) or ``"u32"``; numpy's ``np.uint16``,
            ``np.uint32`` (or their names, ``"<u2"``...) are accepted too.
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
        dtype: Literal["u16", "u32", "uint16", "uint32"] | npt.DTypeLike = "u16",
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
            dtype=_dtype_name(dtype),
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
        is one document per row; any other iterable is a sequence of documents. Tokens
        must be integers: floats, bools and strings are refused, never rounded."""
        if isinstance(tokens, np.ndarray):
            if tokens.ndim == 1:
                self._w.add(_as_doc(tokens, self.num_docs))
                return
            if tokens.ndim == 2:
                rows, cols = tokens.shape
                if tokens.dtype.kind not in "iu" and tokens.size:
                    raise _not_integer(self.num_docs, 0, tokens.reshape(-1)[0].item())
                flat = _as_doc(tokens.reshape(-1), self.num_docs)
                self._w.add_many(flat, np.full(rows, cols, dtype=np.uint64))
                return
            raise ValueError(
                f"tokens must be 1-D (one document) or 2-D (rows), got {tokens.ndim}-D"
            )
        if isinstance(tokens, (str, bytes)):
            raise ValueError("tokens must be integers; tokenize text first")
        if isinstance(tokens, (list, tuple)) and all(_is_int(t) for t in tokens):
            self._w.add(_as_doc(tokens, self.num_docs))
            return
        if isinstance(tokens, (list, tuple)) and not any(
            isinstance(t, (list, tuple, np.ndarray)) for t in tokens
        ):
            # A flat list with a non-integer in it: one document, refused by name.
            self._w.add(_as_doc(tokens, self.num_docs))
            return
        self.add_many(tokens)

    def add_many(self, docs: Iterable[Any]) -> None:
        """Appends each document of ``docs`` (arrays or lists of ints), one by one: a document
        that is refused raises, and the ones before it stay added."""
        for doc in docs:
            if isinstance(doc, (str, bytes)):
                raise ValueError(
                    f"document {self.num_docs}: {type(doc).__name__} is not a list of token ids; "
                    "tokenize text first"
                )
            if not isinstance(doc, (list, tuple)):
                arr = np.asarray(doc)
                if arr.ndim != 1:
                    raise ValueError(
                        f"document {self.num_docs}: a document must be 1-D, got shape {arr.shape}"
                    )
                doc = arr
            self._w.add(_as_doc(doc, self.num_docs))

    def add_many_flat(self, tokens: npt.ArrayLike, lengths: npt.ArrayLike) -> None:
        """Appends many documents at once: ``tokens`` concatenated, ``lengths[i]`` tokens
        each. The fastest path: one call for any number of documents."""
        lens = np.asarray(lengths)
        if lens.dtype.kind not in "iu" and lens.size:
            pos = next(i for i, v in enumerate(lens.reshape(-1).tolist()) if not _is_int(v))
            raise ValueError(
                f"lengths[{pos}] is {lens.reshape(-1).tolist()[pos]!r}, not an integer; "
                "document lengths must be integers"
            )
        if lens.size and lens.min() < 0:
            pos = int(np.argmax(lens.reshape(-1) < 0))
            raise ValueError(
                f"lengths[{pos}] is {lens.reshape(-1).tolist()[pos]}, negative; lengths count "
                "tokens"
            )
        arr = np.asarray(tokens)
        if arr.dtype.kind not in "iu" and arr.size:
            values = list(tokens) if isinstance(tokens, (list, tuple)) else arr.reshape(-1).tolist()
            at = next((i for i, t in enumerate(values) if not _is_int(t)), 0)
            ends = np.cumsum(lens.reshape(-1))
            k = int(np.searchsorted(ends, at, side="right"))
            start = int(ends[k - 1]) if k > 0 else 0
            raise _not_integer(self.num_docs + k, at - start, values[at])
        flat = _as_doc(arr, self.num_docs)
        self._w.add_many(flat, np.ascontiguousarray(lens, dtype=np.uint64))

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
