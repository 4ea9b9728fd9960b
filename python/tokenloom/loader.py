"""``TokenDataset``: batches for training, assembled by the Rust core.

Samples come from a plan over one or more datasets (``concat``, ``pack`` or ``ordered``),
in a keyed pseudo-random order per epoch, split across ranks and DataLoader workers so that
each sample of an epoch is produced exactly once. The position in that stream is a few
integers, so ``state_dict()``/``load_state_dict()`` resume exactly, also with another
number of workers or ranks.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from tokenloom import _core
from tokenloom.ledger import SelectionAccounting
from tokenloom.loader_state import _U64, Cursor, WorkerPos, _count, make_state, read_state
from tokenloom.passes import MAIN, WORKER_KEY, WORKER_MAIN, WorkerRecord, new_token, pass_key
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

__all__ = ["TokenDataset", "write_order"]

# Defaults defined once, in the core (rust/core/src/batch/defaults.rs).
_L = _core.LOADER_DEFAULTS
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
    the next token is in another document, when set, and for padding), ``position_ids``,
    ``doc_ids`` (document index of each token in its dataset, -1 for padding),
    ``cu_seqlens`` (int32 boundaries of the flattened batch, flash-attn varlen convention),
    ``source_ids`` (source of each row) and ``sample_ids`` (sample of each row in its
    source's plan).
    ``boundaries=`` says which tokens may attend to each other, through ``position_ids`` and
    ``cu_seqlens``: ``"document"`` (positions restart at 0 at every document piece,
    ``cu_seqlens`` cuts every piece) or ``"row"`` (positions run over the whole row,
    ``cu_seqlens`` cuts rows only, so documents attend to the ones before them in the row).
    The default follows the mode: ``"row"`` for ordered rows (In-Context Pretraining puts
    related documents together so that they attend to each other), ``"document"`` for
    ``concat`` and ``pack``; ``"row"`` there gives the plain GPT layout of unrelated
    documents attending across their boundaries. ``doc_ids`` tell documents apart either way.
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
    data read locally. ``shuffle_window=n`` shuffles each source in windows of about ``n``
    samples drawn from 16 random runs of consecutive samples (0, the default: the whole source
    at once): a shuffled read then needs a few shards at a time, so a cache far smaller than
    the dataset serves it (docs/remote.md); local reads may use it too, for the same stream.
    """

    def __init__(
        self,
        sources: SourceSpec,
        seq_len: int,
        batch_size: int,
        *,
        mode: str | None = None,
        order: PathLike | None = None,
        shuffle: bool = _L["shuffle"],
        shuffle_window: int = _L["shuffle_window"],
        seed: int = _L["seed"],
        dtype: str = _L["dtype"],
        drop_last: bool = _L["drop_last"],
        ignore_index: int | None = None,
        pad_id: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        threads: int = _L["threads"],
        prefetch: int = _L["prefetch"],
        output: str | None = None,
        pin_memory: bool = False,
        cache_plans: bool = True,
        outputs: Sequence[str] = OPTIONAL_OUTPUTS,
        reoffer_unkept: int = 0,
        reoffer_rows: int | None = None,
        reoffer_capacity: int | None = None,
        boundaries: str | None = None,
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
        self.mode = mode or ("ordered" if order is not None else _L["mode"])
        self.order = None if order is None else os.fspath(order)
        self.shuffle = bool(shuffle)
        if shuffle_window < 0:
            raise ValueError(f"shuffle_window must be >= 0 (0: no window), got {shuffle_window}")
        self.shuffle_window = int(shuffle_window)
        self.seed = int(seed)
        self.dtype = _core.batch_dtype(dtype)
        self.drop_last = bool(drop_last)
        self.ignore_index = ignore_index
        self.rank = rank
        self.world_size = world_size
        self.threads = max(1, int(threads))
        self.prefetch = max(1, int(prefetch))
        self.output = output
        self.pin_memory = pin_memory
        self.cache_plans = cache_plans
        self._boundaries = boundaries
        self.weights = weights
        self.remote: dict[str, Any] = {
            "cache_dir": None if cache_dir is None else os.fspath(cache_dir),
            "cache_limit": cache_limit,
            "storage_options": storage_options,
        }
        self.lookahead = lookahead
        self._stream: _core.Stream | None = None
        stream = self._get_stream()
        # A plain list of paths: the weights follow the sources' sizes (the core's default).
        self.weights = list(stream.weights)
        if pad_id is None:
            pad_id = _L["pad_id"] if stream.eos_id is None else int(stream.eos_id)
        self.pad_id = int(pad_id)
        _warn_order_length(self.order, stream.order_seq_len, self.seq_len)
        if self.shuffle and not self.shuffle_window:
            _warn_cache_too_small(stream.over_capacity)
        self._record = WorkerRecord()
        self._held = 0  # batches a DevicePrefetcher holds beyond what the trainer has (0 or 1)
        self._handed: Handed | None = None  # this pass's batches, counted by tl.DataLoader
        self._move(stream.start(0))
        self._resume_worker: WorkerPos | None = None  # (worker, num_workers, skip)
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
            caches = [cache_dir(p) if self.cache_plans else None for p in self.paths]
            self._stream = _core.Stream(
                self.paths,
                self.seq_len,
                weights=self.weights,
                mode=self.mode,
                order=self.order,
                seed=self.seed,
                shuffle=self.shuffle,
                shuffle_window=self.shuffle_window,
                cache_dirs=caches,
                boundaries=self._boundaries,
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
    def boundaries(self) -> str:
        """``"document"`` or ``"row"``: what ``position_ids`` and ``cu_seqlens`` delimit."""
        return self._get_stream().boundaries

    @property
    def epoch(self) -> int:
        """The epoch the next iteration reads."""
        return self._cursor[0]

    @property
    def samples_per_epoch(self) -> int:
        return self._get_stream().epoch_len

    def set_epoch(self, epoch: int) -> None:
        """Starts the next iteration at the beginning of ``epoch``."""
        epoch = _count(epoch, "epoch")
        stream = self._get_stream()
        if (epoch + 1) * stream.epoch_len >= _U64:
            raise ValueError(f"epoch {epoch} is too large for epochs of {stream.epoch_len} samples")
        self._move(stream.start(epoch))
        self._resume_worker = None

    def _move(self, cursor: Cursor) -> None:
        """The next pass starts at ``cursor``: a new position, announced to DataLoader workers."""
        self._cursor = self._origin = self._prev = cursor
        self._handed = None
        self._held = 0
        self._token = new_token()
        if worker_info() is None:
            self._main_token = self._token
            self._record[MAIN] = self._token

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
        _refuse_batching(self, sys._getframe(1))
        return self._batches(*dist_info(self.rank, self.world_size))

    def _batches(self, rank: int, world: int) -> Iterator[dict[str, Any]]:
        stream = self._get_stream()
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
        start = self._prev if self._held else self._cursor  # a held batch is read again
        if worker is None:
            self._move(start)
        else:
            self._origin = start
            if wid == 0:
                self._check_worker_pass(start, skip)
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
                self._prev, self._cursor = self._cursor, after
            else:
                self._worker_state = make_state(self.fingerprint, start, (wid, nworkers, yielded))
            yield self._convert(arrays, worker is not None)
        if worker is None and last_after is None:
            self._cursor = stream.start(start[0] + 1)

    def _check_worker_pass(self, start: Cursor, skip: int) -> None:
        """In worker 0, as a pass begins: refuses a stale copy or a pass read before."""
        record = self._record
        if record[MAIN] != self._main_token:
            raise RuntimeError(
                "this DataLoader worker reads a copy of the TokenDataset made before its "
                "position changed in the main process (set_epoch, load_state_dict or a pass "
                "there): persistent_workers=True keeps the copies made when the workers "
                "started. Use persistent_workers=False (workers start in milliseconds)"
            )
        key = pass_key(self._token, start, skip)
        if record[WORKER_KEY] == key:
            raise RuntimeError(
                f"this pass would read epoch {start[0]} from position {start[1]} again: "
                "DataLoader workers already read it, from copies of the dataset, so its "
                "position in the main process did not move. Call ds.set_epoch(epoch) before "
                "each pass (also to read an epoch again), or iterate through "
                "tl.DataLoader(ds, ...), which moves it"
            )
        record[WORKER_MAIN] = self._main_token
        record[WORKER_KEY] = key

    # -- state --------------------------------------------------------------------------

    def state_dict(self, consumed_batches: int | None = None) -> dict[str, Any]:
        """Where the stream stands: load it into a new ``TokenDataset`` to continue exactly.

        - Iterated in this process (``num_workers=0``), through ``tl.DataLoader`` (any
          ``num_workers``) or a ``DevicePrefetcher``: the position after the last batch the
          trainer received.
        - Inside a DataLoader worker (as torchdata's ``StatefulDataLoader`` calls it): the
          position of that worker's stream.
        - With ``consumed_batches=k``: the position after this rank has consumed ``k`` batches
          of the current pass (counted from where it started: the epoch start, or the loaded
          state); works with any ``DataLoader`` and resumes with any ``num_workers`` and
          world size.

        After a plain ``DataLoader`` iterated it in worker processes, the main process
        cannot know how many batches the trainer consumed: without ``consumed_batches`` that
        is refused (use ``tl.DataLoader``).
        """
        in_worker = worker_info() is not None
        if in_worker and consumed_batches is None and self._worker_state is not None:
            return dict(self._worker_state)
        if consumed_batches is not None:
            consumed = _count(consumed_batches, "consumed_batches")
            if not in_worker:
                self._check_workers_began_at_origin()
            cursor = self._advance(self._origin, consumed)
        else:
            cursor = self._trainer_cursor(in_worker)
        state = make_state(self.fingerprint, cursor)
        if self._ledger is not None:
            state["selection"] = self._ledger.state()
        return state

    def _workers_iterated(self) -> bool:
        """Whether DataLoader workers began a pass since the position last changed here."""
        return self._record[WORKER_MAIN] == self._main_token

    def _check_workers_began_at_origin(self) -> None:
        if self._workers_iterated() and self._record[WORKER_KEY] != pass_key(
            self._token, self._origin, 0
        ):
            raise ValueError(
                "the DataLoader workers did not begin this pass where this dataset's position "
                f"says (epoch {self._origin[0]}, position {self._origin[1]}): their copies "
                "were restored elsewhere (as StatefulDataLoader does), so batches counted from "
                "here would be wrong. Take the state from the loader that restored them"
            )

    def _trainer_cursor(self, in_worker: bool) -> Cursor:
        """The cursor after the batches the trainer received in this pass."""
        handed = self._handed
        if handed is not None:  # counted by tl.DataLoader in this process
            if handed.done and not self._held:
                return self._get_stream().start(self._origin[0] + 1)
            return self._advance(self._origin, handed.batches - self._held)
        if not in_worker and self._workers_iterated():
            raise ValueError(
                "this TokenDataset was iterated by DataLoader workers, which read copies of "
                "it: its position here did not move, and how many batches the trainer "
                "consumed is not known here. Iterate through tl.DataLoader(ds, num_workers="
                "...), whose state_dict() is exact, or pass the batches consumed in this "
                "pass: ds.state_dict(consumed_batches=k)"
            )
        return self._prev if self._held else self._cursor

    def _begin_pass(self, counted: bool) -> Handed | None:
        """Called by ``tl.DataLoader`` as its pass begins: the pass starts where the trainer
        stopped; with ``counted`` the batches handed to the trainer are counted here."""
        self._move(self._trainer_cursor(in_worker=False))
        self._handed = Handed() if counted else None
        return self._handed

    def _advance(self, cursor: Cursor, batches: int) -> Cursor:
        stream = self._get_stream()
        _rank, world = dist_info(self.rank, self.world_size)
        left = stream.batches_left(cursor[1], self.batch_size, 0, world, self.drop_last)
        if batches >= left:
            return stream.start(cursor[0] + 1)
        return stream.advance(cursor, batches * self.batch_size * world)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues from ``state`` (from :meth:`state_dict`) at the next iteration. Every field
        is checked here; a bad one raises ``ValueError`` naming it."""
        stream = self._get_stream()
        cursor, worker = read_state(state, self.fingerprint, stream)
        if worker is not None:
            wid, n, batches = worker
            rank, world = dist_info(self.rank, self.world_size)
            steps = stream.batches_left(cursor[1], self.batch_size, rank, world, self.drop_last)
            mine = max(0, -(-(steps - wid) // n))
            if batches > mine:
                raise ValueError(
                    f"worker.batches {batches} exceeds the {mine} batches worker {wid} of {n} "
                    f"reads from position {cursor[1]} (batch_size {self.batch_size}, world "
                    f"size {world})"
                )
        if "selection" in state:
            self._get_ledger().load(state["selection"])
        self._move(cursor)
        self._resume_worker = worker
        self._worker_state = None


@dataclass
class Handed:
    """Batches of the current pass handed to the trainer (counted by ``tl.DataLoader``)."""

    batches: int = 0
    done: bool = False


def _refuse_batching(ds: TokenDataset, caller: Any) -> None:
    """Raises when a DataLoader that batches items (``batch_size`` not ``None``) iterates
    ``ds``: the caller is then its dataset fetcher, set to collate several items."""
    fetcher = caller.f_locals.get("self")
    if getattr(fetcher, "dataset", None) is ds and getattr(fetcher, "auto_collation", False):
        raise TypeError(
            "a TokenDataset yields whole batches ([batch_size, seq_len] arrays), and this "
            "DataLoader batches them again (its batch_size is not None): it would stack them "
            "into [n, batch_size, seq_len]. Use DataLoader(ds, batch_size=None, ...) or "
            "tl.DataLoader(ds, ...); for transformers.Trainer, give it "
            "tokenloom.hf.TrainerRows(ds)"
        )


def _warn_order_length(order: str | None, made_for: int | None, seq_len: int) -> None:
    if made_for is None or made_for == seq_len:
        return
    warnings.warn(
        f"order {order!r} was made for seq_len={made_for}, and this TokenDataset uses "
        f"seq_len={seq_len}: documents still follow the order, but rows of {seq_len + 1} "
        "tokens put other neighbours in each context than the order's report describes "
        f"(its figures are for rows of {made_for + 1}). To match, make the order with "
        f"tl.order(..., seq_len={seq_len})",
        UserWarning,
        stacklevel=3,
    )


def _warn_cache_too_small(over: tuple[int, int] | None) -> None:
    if over is None:
        return
    need, limit = over
    warnings.warn(
        f"the remote datasets take {need} bytes ({need / 2**30:.2f} GiB) in the cache and "
        f"cache_limit={limit} bytes ({limit / 2**30:.2f} GiB) does not hold them, and "
        "shuffle=True reads them in random order: each batch reads samples of several random "
        "shards, fetched whole, so shards are fetched again and again (at half the dataset in "
        "cache, an epoch moves it about 1,900 times over; docs/remote.md). Give the cache room "
        f"for the whole dataset (cache_limit >= {need}, or TOKENLOOM_CACHE_LIMIT), shuffle in "
        "windows that fit it (shuffle_window=), or read with shuffle=False",
        UserWarning,
        stacklevel=3,
    )


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
