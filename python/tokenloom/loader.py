"""``TokenDataset``: batches for training, assembled by the Rust core.

Samples come from a plan over one or more datasets (``concat``, ``pack`` or ``ordered``),
in a keyed pseudo-random order per epoch, split across ranks and DataLoader workers so that
each sample of an epoch is produced exactly once. The position in that stream is a few
integers, so ``state_dict()``/``load_state_dict()`` resume exactly, also with another
number of workers or ranks.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Union

from tokenloom import _core
from tokenloom.device import DevicePrefetcher, to_device
from tokenloom.ledger import SelectionAccounting
from tokenloom.runtime import cache_dir, dist_info, torch_or_none, worker_info

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import numpy as np
    from torch.utils.data import IterableDataset

    _Base = IterableDataset[dict[str, Any]]
else:
    try:
        from torch.utils.data import IterableDataset as _Base
    except ImportError:  # the loader works without torch, yielding numpy arrays
        _Base = object

PathLike = Union[str, "os.PathLike[str]"]
SourceSpec = Union[PathLike, "Sequence[PathLike]", "Sequence[tuple[PathLike, float]]"]
Cursor = tuple[int, int, list[int]]

__all__ = ["DevicePrefetcher", "TokenDataset", "to_device", "write_order"]

STATE_VERSION = 1
# Arrays a batch can carry besides input_ids and labels.
OPTIONAL_OUTPUTS = ("position_ids", "doc_ids", "cu_seqlens", "source_ids", "sample_ids")


def _parse_sources(sources: SourceSpec) -> tuple[list[str], list[float] | None]:
    if isinstance(sources, (str, os.PathLike)):
        return [os.fspath(sources)], [1.0]
    items = list(sources)
    if not items:
        raise ValueError("sources is empty: give a dataset path or a list of (path, weight)")
    if all(isinstance(s, tuple) for s in items):
        paths, weights = [], []
        for s in items:
            if not isinstance(s, tuple) or len(s) != 2:
                raise ValueError(f"each source must be (path, weight), got {s!r}")
            paths.append(os.fspath(s[0]))
            weights.append(float(s[1]))
        return paths, weights
    if any(isinstance(s, tuple) for s in items):
        raise ValueError("give either paths or (path, weight) pairs, not both")
    return [os.fspath(s) for s in items], None  # type: ignore[arg-type]


class TokenDataset(SelectionAccounting, _Base):
    """Batches of ``[batch_size, seq_len]`` token arrays from tokenloom datasets.

    Each item is a dict: ``input_ids``, ``labels`` (the next tokens; ``ignore_index`` where
    the next token is in another document, when set, and for padding), ``position_ids``
    (restarting at 0 at every document piece), ``doc_ids`` (document index of each token in
    its dataset, -1 for padding), ``cu_seqlens`` (int32 boundaries of the pieces of the
    flattened batch, flash-attn varlen convention), ``source_ids`` (source of each row) and
    ``sample_ids`` (sample of each row in its source's plan).
    ``outputs=`` names the ones to produce besides ``input_ids`` and ``labels`` (default: all);
    leaving out ``position_ids`` and ``doc_ids`` halves the memory traffic per batch.
    ``order=`` names an order made by :func:`tokenloom.order` (``"iclm"``, stored with the
    dataset) or an order file, and implies ``mode="ordered"``: rows follow the order's
    contexts; ``shuffle=True`` shuffles whole rows (contexts) so that consecutive contexts are
    unrelated, ``shuffle=False`` keeps path order.
    torch tensors when torch is installed (zero-copy from the Rust buffers), else numpy.

    Use it with ``torch.utils.data.DataLoader(ds, batch_size=None, num_workers=..)``.
    One pass over the iterator is the rest of the current epoch; the next pass starts the
    next epoch. ``drop_last=True`` (default) drops a last global step that is not full on
    every rank, so that all ranks get the same number of batches.

    With online selection, :meth:`record_selection` books which rows of each candidate batch
    were kept (:meth:`selection_stats`, saved in :meth:`state_dict`). ``reoffer_unkept=n``
    offers each unkept sample up to ``n`` more times: :meth:`candidates` appends up to
    ``reoffer_rows`` queued samples (first in, first out; at most ``reoffer_capacity``
    queued, the oldest dropped beyond) to each candidate batch.

    Sources may be URLs (``s3://``, ``gs://``, ``az://``, ``http(s)://``, ``file://``): shards
    are fetched into the local cache (``cache_dir``, ``cache_limit``, ``storage_options``: see
    :func:`tokenloom.open_dataset`) as the plan reaches them, ``lookahead`` batches ahead of the
    one being read, and mapped from there; the stream and its resumption are those of the same
    data read locally.
    """

    def __init__(
        self,
        sources: SourceSpec,
        seq_len: int,
        batch_size: int,
        *,
        mode: str | None = None,
        order: PathLike | None = None,
        shuffle: bool = True,
        seed: int = 0,
        dtype: str = "int64",
        drop_last: bool = True,
        ignore_index: int | None = None,
        pad_id: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        threads: int = 2,
        prefetch: int = 2,
        output: str | None = None,
        pin_memory: bool = False,
        cache_plans: bool = True,
        outputs: Sequence[str] = OPTIONAL_OUTPUTS,
        reoffer_unkept: int = 0,
        reoffer_rows: int | None = None,
        reoffer_capacity: int | None = None,
        cache_dir: PathLike | None = None,
        cache_limit: int | None = None,
        storage_options: dict[str, str] | None = None,
        lookahead: int | None = None,
    ) -> None:
        unknown = sorted(set(outputs) - set(OPTIONAL_OUTPUTS))
        if unknown or isinstance(outputs, str):
            raise ValueError(
                f"outputs must be a sequence of names among {', '.join(OPTIONAL_OUTPUTS)}; "
                f"got {outputs!r} (input_ids and labels are always produced)"
            )
        self.outputs = tuple(o for o in OPTIONAL_OUTPUTS if o in outputs)
        if seq_len < 1:
            raise ValueError(f"seq_len must be at least 1, got {seq_len}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if dtype not in ("int64", "int32"):
            raise ValueError(f'dtype must be "int64" or "int32", got {dtype!r}')
        if output is None:
            output = "torch" if torch_or_none() is not None else "numpy"
        if output not in ("torch", "numpy"):
            raise ValueError(f'output must be "torch" or "numpy", got {output!r}')
        if output == "torch" and torch_or_none() is None:
            raise ImportError('output="torch" needs PyTorch: pip install torch')
        paths, weights = _parse_sources(sources)
        self.paths = paths
        self.seq_len = int(seq_len)
        self.batch_size = int(batch_size)
        self.mode = mode or ("ordered" if order is not None else "concat")
        self.order = None if order is None else os.fspath(order)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.dtype = dtype
        self.drop_last = bool(drop_last)
        self.ignore_index = ignore_index
        self.rank = rank
        self.world_size = world_size
        self.threads = max(1, int(threads))
        self.prefetch = max(1, int(prefetch))
        self.output = output
        self.pin_memory = pin_memory
        self.cache_plans = cache_plans
        self.weights = weights
        self.remote: dict[str, Any] = {
            "cache_dir": None if cache_dir is None else os.fspath(cache_dir),
            "cache_limit": cache_limit,
            "storage_options": storage_options,
        }
        self.lookahead = lookahead
        self._stream: _core.Stream | None = None
        stream = self._get_stream()
        if weights is None:  # plain list of paths: weights follow the sources' sizes
            self.weights = [float(n) for n in stream.num_samples]
            self._stream = None
            stream = self._get_stream()
        if pad_id is None:
            eos = _core.Dataset(paths[0], **self.remote).eos_id
            pad_id = 0 if eos is None else int(eos)
        self.pad_id = int(pad_id)
        self._cursor: Cursor = stream.start(0)
        self._origin: Cursor = self._cursor  # where the latest iteration started
        self._resume_worker: tuple[int, int, int] | None = None  # (worker, num_workers, skip)
        self._worker_state: dict[str, Any] | None = None
        if reoffer_unkept < 0 or (reoffer_rows is not None and reoffer_rows < 1):
            raise ValueError("reoffer_unkept must be >= 0 and reoffer_rows >= 1")
        self.reoffer = (
            int(reoffer_unkept),
            max(1, self.batch_size // 4) if reoffer_rows is None else int(reoffer_rows),
            8 * self.batch_size if reoffer_capacity is None else int(reoffer_capacity),
        )
        self._ledger = None

    # -- plumbing -------------------------------------------------------------------------

    def _get_stream(self) -> _core.Stream:
        if self._stream is None:
            weights = self.weights or [1.0] * len(self.paths)
            caches = [cache_dir(p) if self.cache_plans else None for p in self.paths]
            self._stream = _core.Stream(
                self.paths,
                weights,
                self.seq_len,
                mode=self.mode,
                order=self.order,
                seed=self.seed,
                shuffle=self.shuffle,
                cache_dirs=caches,
                lookahead=self.lookahead,
                **self.remote,
            )
        return self._stream

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_stream"] = None  # reopened in the worker (plans come from the cache)
        state["_ledger"] = None  # selection is booked where it happens, not in workers
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def fingerprint(self) -> str:
        """Identifies datasets, plan, mode, seq_len, order, weights, seed and shuffling."""
        return self._get_stream().fingerprint

    @property
    def epoch(self) -> int:
        """The epoch the next iteration reads."""
        return self._cursor[0]

    @property
    def samples_per_epoch(self) -> int:
        return self._get_stream().epoch_len

    def set_epoch(self, epoch: int) -> None:
        """Starts the next iteration at the beginning of ``epoch``."""
        self._cursor = self._origin = self._get_stream().start(int(epoch))
        self._resume_worker = None

    def __len__(self) -> int:
        """Batches this rank reads in the rest of the current epoch."""
        rank, world = dist_info(self.rank, self.world_size)
        return self._get_stream().batches_left(
            self._cursor[1], self.batch_size, rank, world, self.drop_last
        )

    def _convert(self, arrays: dict[str, np.ndarray], in_worker: bool) -> dict[str, Any]:
        if self.output == "numpy":
            return arrays
        torch = torch_or_none()
        if in_worker:
            return _shared_batch(torch, arrays)
        out = {k: torch.from_numpy(v) for k, v in arrays.items()}
        # Pinning needs CUDA, which a forked DataLoader worker must not touch: there,
        # DataLoader(pin_memory=True) pins in the main process instead.
        if self.pin_memory and worker_info() is None and torch.cuda.is_available():
            out = {k: v.pin_memory() for k, v in out.items()}
        return out

    # -- iteration --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        stream = self._get_stream()
        rank, world = dist_info(self.rank, self.world_size)
        worker = worker_info()
        wid, nworkers = worker if worker is not None else (0, 1)
        skip = 0
        if self._resume_worker is not None:
            rw, rn, rskip = self._resume_worker
            if (rw, rn) != (wid, nworkers):
                raise ValueError(
                    f"this state was saved by worker {rw} of {rn}, but it is loaded into worker "
                    f"{wid} of {nworkers}; to change num_workers, resume from "
                    "ds.state_dict(consumed_batches=...) instead"
                )
            skip = rskip
            self._resume_worker = None
        start = self._origin = self._cursor
        loader = stream.loader(
            start,
            self.batch_size,
            rank=rank,
            world=world,
            worker=wid,
            num_workers=nworkers,
            drop_last=self.drop_last,
            dtype=self.dtype,
            ignore_index=self.ignore_index,
            pad_id=self.pad_id,
            threads=self.threads,
            depth=self.prefetch,
            skip=skip,
            position_ids="position_ids" in self.outputs,
            doc_ids="doc_ids" in self.outputs,
        )
        drop = [k for k in ("cu_seqlens", "source_ids", "sample_ids") if k not in self.outputs]
        yielded = skip
        last_after: Cursor | None = None
        for arrays, _step, after in loader:
            for k in drop:
                del arrays[k]
            yielded += 1
            last_after = after
            if worker is None:
                self._cursor = after
            else:
                self._worker_state = self._state(start, (wid, nworkers, yielded))
            yield self._convert(arrays, worker is not None)
        if worker is None and last_after is None:
            self._cursor = stream.start(start[0] + 1)

    # -- state --------------------------------------------------------------------------

    def _state(self, cursor: Cursor, worker: tuple[int, int, int] | None = None) -> dict[str, Any]:
        epoch, position, counts = cursor
        state: dict[str, Any] = {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "position": position,
            "counts": list(counts),
        }
        if worker is not None:
            state["worker"] = {"id": worker[0], "num_workers": worker[1], "batches": worker[2]}
        return state

    def state_dict(self, consumed_batches: int | None = None) -> dict[str, Any]:
        """Where the stream stands: load it into a new ``TokenDataset`` to continue exactly.

        - Iterated in this process (``num_workers=0``): the position after the last batch
          yielded.
        - Inside a DataLoader worker (as torchdata's ``StatefulDataLoader`` calls it): the
          position of that worker's stream.
        - With ``consumed_batches=k``: the position after this rank has consumed ``k`` batches
          of the current pass (counted from where it started: the epoch start, or the loaded
          state); works with any ``DataLoader`` and resumes with any ``num_workers`` and
          world size.
        """
        in_worker = self._worker_state is not None and worker_info() is not None
        if in_worker and consumed_batches is None:
            return dict(self._worker_state or {})
        if consumed_batches is not None:
            state = self._state(self._advance(self._origin, int(consumed_batches)))
        else:
            state = self._state(self._cursor)
        if self._ledger is not None:
            state["selection"] = self._ledger.state()
        return state

    def _advance(self, cursor: Cursor, batches: int) -> Cursor:
        if batches < 0:
            raise ValueError(f"consumed_batches must be >= 0, got {batches}")
        stream = self._get_stream()
        _rank, world = dist_info(self.rank, self.world_size)
        left = stream.batches_left(cursor[1], self.batch_size, 0, world, self.drop_last)
        if batches >= left:
            return stream.start(cursor[0] + 1)
        return stream.advance(cursor, batches * self.batch_size * world)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues from ``state`` (from :meth:`state_dict`) at the next iteration."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"unsupported state version {state.get('version')!r} (this tokenloom "
                f"reads {STATE_VERSION})"
            )
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError(
                "this state was saved for other data: its fingerprint "
                f"{state.get('fingerprint')} differs from this dataset's {self.fingerprint} "
                "(datasets, mode, seq_len, order file, weights, seed and shuffle must match)"
            )
        counts = [int(c) for c in state["counts"]]
        if len(counts) != len(self.paths):
            raise ValueError(f"the state has {len(counts)} sources, this dataset {len(self.paths)}")
        self._cursor = self._origin = (int(state["epoch"]), int(state["position"]), counts)
        w = state.get("worker")
        self._resume_worker = None if w is None else (w["id"], w["num_workers"], w["batches"])
        self._worker_state = None
        if "selection" in state:
            self._get_ledger().load(state["selection"])


def _shared_batch(torch: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The batch as views of one shared-memory buffer: a DataLoader worker then hands the
    main process a single segment instead of copying each array into its own."""
    sizes = {k: -(-v.nbytes // 8) for k, v in arrays.items()}  # in 8-byte words
    buf = torch.empty(sum(sizes.values()), dtype=torch.int64).share_memory_()
    out, at = {}, 0
    for k, v in arrays.items():
        words = buf[at : at + sizes[k]]
        t = words.view(torch.uint8)[: v.nbytes].view(_TORCH_DTYPES[v.dtype.str](torch))
        t = t.view(v.shape)
        t.numpy()[...] = v
        out[k] = t
        at += sizes[k]
    return out


_TORCH_DTYPES = {
    "<i8": lambda torch: torch.int64,
    "<i4": lambda torch: torch.int32,
}


def write_order(
    dataset: PathLike,
    path: PathLike,
    docs: Sequence[int] | np.ndarray,
    context_starts: Sequence[int] | np.ndarray,
) -> None:
    """Writes an order file for ``mode="ordered"``: ``docs`` (document ids of ``dataset``,
    each at most once) in training order, cut into contexts at ``context_starts``
    (``0 = s_0 <= s_1 <= ... <= s_k = len(docs)``)."""
    _core.write_order(
        os.fspath(dataset),
        os.fspath(path),
        [int(d) for d in docs],
        [int(s) for s in context_starts],
    )
