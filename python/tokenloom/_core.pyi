"""Type stubs of the compiled module ``tokenloom._core`` (checked by mypy.stubtest)."""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict, final, type_check_only

import numpy as np
import numpy.typing as npt
from typing_extensions import deprecated

__all__ = [
    "DEFAULT_CALIBRATION",
    "LOADER_DEFAULTS",
    "ORDER_DEFAULTS",
    "SELECT_RULES",
    "CorruptShardError",
    "Dataset",
    "DatasetLock",
    "DatasetWriter",
    "FormatVersionError",
    "JobCancelledError",
    "Loader",
    "LockedError",
    "Selector",
    "Stream",
    "TokenloomError",
    "_MappedView",
    "__version__",
    "batch_dtype",
    "default_alpha",
    "is_url",
    "knn_graph",
    "merge_datasets",
    "open_dataset",
    "order_assign_part",
    "order_centroids",
    "order_check_sealed",
    "order_dataset",
    "order_embed_part",
    "order_finish_staged",
    "order_frequencies",
    "order_idf",
    "order_ivf_defaults",
    "order_knn_group",
    "order_list_counts",
    "order_plan_groups",
    "order_read_knn",
    "order_seal",
    "order_work_dir",
    "read_order",
    "report_summary",
    "run_cli",
    "score_order",
    "staging_dir",
    "upload_dataset",
    "write_order",
    "write_report_png",
    "write_sources",
]

__version__: str

class TokenloomError(Exception):
    path: str | None
    """The file the error is about, when there is one."""
    offset: int | None
    """The byte offset in ``path`` where the problem was found, when known."""

class CorruptShardError(TokenloomError): ...
class FormatVersionError(TokenloomError): ...
class JobCancelledError(TokenloomError): ...
class LockedError(TokenloomError): ...

@final
class _MappedView: ...

@final
class Dataset:
    @deprecated("open a dataset with tokenloom.open_dataset(path); Dataset is its type")
    def __new__(
        cls,
        path: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str] | None = None,
        cache_limit: int | None = None,
        storage_options: dict[str, str] | None = None,
    ) -> Dataset: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: int, /) -> npt.NDArray[np.unsignedinteger[Any]]: ...
    @property
    def num_tokens(self) -> int: ...
    @property
    def dtype(self) -> str: ...
    @property
    def num_shards(self) -> int: ...
    @property
    def eos_id(self) -> int | None: ...
    @property
    def vocab_size(self) -> int | None: ...
    @property
    def tokenizer(self) -> str | None: ...
    @property
    def path(self) -> str: ...
    @property
    def root(self) -> Path: ...
    @property
    def is_remote(self) -> bool: ...
    def doc_lengths(self) -> npt.NDArray[np.uint64]: ...
    def source(self, index: int) -> tuple[str, int]: ...
    def verify(self, check_vocab: bool = False, progress: bool = True) -> dict[str, int]: ...
    def summary(self) -> dict[str, Any]: ...
    def __reduce__(
        self,
    ) -> tuple[Any, tuple[str, str | None, int | None, dict[str, str] | None]]: ...

def open_dataset(
    path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    cache_limit: int | None = None,
    storage_options: dict[str, str] | None = None,
) -> Dataset: ...

@final
class DatasetWriter:
    def __new__(
        cls,
        path: str | os.PathLike[str],
        dtype: str = "u16",
        eos_id: int | None = None,
        vocab_size: int | None = None,
        tokenizer: str | None = None,
        shard_bytes: int = 1073741824,
        overwrite: bool = False,
        compression: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        storage_options: dict[str, str] | None = None,
    ) -> DatasetWriter: ...
    def add(self, tokens: npt.NDArray[np.integer[Any]]) -> None: ...
    def add_many(
        self, tokens: npt.NDArray[np.integer[Any]], lengths: npt.NDArray[np.uint64]
    ) -> None: ...
    def close(self, progress: bool = False) -> dict[str, int]: ...
    def abort(self) -> None: ...
    @property
    def num_docs(self) -> int: ...
    @property
    def num_tokens(self) -> int: ...
    @property
    def path(self) -> str: ...

def run_cli(argv: list[str]) -> int: ...
def knn_graph(
    embeddings: npt.NDArray[np.float32],
    k: int,
    exact: bool = False,
    nlist: int | None = None,
    nprobe: int | None = None,
    train_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...
def write_sources(
    path: str | os.PathLike[str], runs: list[tuple[str, int]], rows: npt.NDArray[np.uint64]
) -> None: ...

@final
class DatasetLock:
    def __new__(cls, path: str | os.PathLike[str], what: str = "build") -> DatasetLock: ...
    def release(self) -> None: ...
    def __enter__(self) -> DatasetLock: ...
    def __exit__(self, _t: object | None, _v: object | None, _tb: object | None) -> None: ...

def merge_datasets(
    out: str | os.PathLike[str],
    parts: list[str | os.PathLike[str]],
    overwrite: bool = False,
    lock: DatasetLock | None = None,
) -> dict[str, int]: ...

_Cursor = tuple[int, int, list[int]]

@final
# Defaults shown as ... come from the core (_core.LOADER_DEFAULTS; tests/test_defaults.py).
class Stream:
    def __new__(
        cls,
        paths: list[str],
        seq_len: int,
        weights: list[float] | None = None,
        mode: str = ...,
        order: str | None = None,
        seed: int = ...,
        shuffle: bool = ...,
        cache_dirs: list[str | None] | None = None,
        boundaries: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_limit: int | None = None,
        storage_options: dict[str, str] | None = None,
        lookahead: int | None = None,
        shuffle_window: int = ...,
    ) -> Stream: ...
    @property
    def weights(self) -> list[float]: ...
    @property
    def eos_id(self) -> int | None: ...
    @property
    def epoch_len(self) -> int: ...
    @property
    def num_samples(self) -> list[int]: ...
    @property
    def boundaries(self) -> str: ...
    @property
    def over_capacity(self) -> tuple[int, int] | None: ...
    @property
    def plans_cached(self) -> list[bool]: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def legacy_fingerprint(self) -> str: ...
    @property
    def order_seq_len(self) -> int | None: ...
    def check_cursor(self, cursor: _Cursor) -> None: ...
    def start(self, epoch: int) -> _Cursor: ...
    def advance(self, at: _Cursor, n: int) -> _Cursor: ...
    def batches_left(
        self, position: int, batch_size: int, rank: int = 0, world: int = 1, drop_last: bool = ...
    ) -> int: ...
    def assemble(
        self,
        samples: list[tuple[int, int]],
        dtype: str = ...,
        ignore_index: int | None = None,
        pad_id: int = ...,
        position_ids: bool = True,
        doc_ids: bool = True,
    ) -> dict[str, npt.NDArray[Any]]: ...
    def loader(
        self,
        start: _Cursor,
        batch_size: int,
        rank: int = 0,
        world: int = 1,
        worker: int = 0,
        num_workers: int = 1,
        drop_last: bool = ...,
        dtype: str = ...,
        ignore_index: int | None = None,
        pad_id: int = ...,
        threads: int = ...,
        depth: int = ...,
        skip: int = 0,
        position_ids: bool = True,
        doc_ids: bool = True,
    ) -> Loader: ...

@final
class Loader:
    def __iter__(self) -> Loader: ...
    def __next__(self) -> tuple[dict[str, npt.NDArray[Any]], int, _Cursor]: ...
    def __len__(self) -> int: ...

def write_order(
    dataset: str | os.PathLike[str],
    path: str | os.PathLike[str],
    docs: list[int],
    context_starts: list[int],
) -> None: ...

@final
class Selector:
    def __new__(
        cls,
        rule: str,
        keep: int,
        buffer_size: int,
        dim: int,
        alpha: float,
        seed: int,
        state: dict[str, Any] | None = None,
        calibration: int = ...,
    ) -> Selector: ...
    def select(
        self, utility: npt.NDArray[np.float32], sketches: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.int64]: ...
    def effective_alpha(self) -> float: ...
    def check_run(self, batches: int) -> None: ...
    def state(self) -> dict[str, Any]: ...

SELECT_RULES: list[str]
ORDER_DEFAULTS: dict[str, Any]
DEFAULT_CALIBRATION: int
LOADER_DEFAULTS: dict[str, Any]

def batch_dtype(name: str) -> str: ...
def default_alpha(rule: str) -> float: ...

# Defaults shown as ... come from the core (_core.ORDER_DEFAULTS; tests/test_defaults.py).
def order_dataset(
    path: str | os.PathLike[str],
    seq_len: int,
    name: str = ...,
    k: int = ...,
    dedup: float | None = ...,
    variant: str = ...,
    max_segment: int = ...,
    k_traverse: int = ...,
    min_segment: int = ...,
    seed: int = ...,
    exact: bool | None = None,
    dim: int = ...,
    max_tokens: int = ...,
    embeddings: npt.NDArray[np.float32] | npt.NDArray[np.float16] | None = None,
    knn: npt.NDArray[np.int64] | None = None,
    knn_similarities: npt.NDArray[np.float32] | None = None,
    drop_self: bool = False,
    source: dict[str, Any] | None = None,
    progress: bool = True,
    score_vectors: npt.NDArray[np.float32] | None = None,
    score_name: str = "",
    labels: npt.NDArray[np.int64] | None = None,
) -> tuple[Path, dict[str, Any]]: ...
def score_order(
    path: str | os.PathLike[str],
    spec: str | os.PathLike[str],
    seq_len: int | None = None,
    vectors: npt.NDArray[np.float32] | None = None,
    name: str = "",
    labels: npt.NDArray[np.int64] | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> dict[str, Any]: ...
def order_ivf_defaults(n: int) -> tuple[int, int, int]: ...
def order_frequencies(
    path: str | os.PathLike[str],
    first: int,
    end: int,
    dim: int = ...,
    max_tokens: int = ...,
    seed: int = ...,
    progress: bool = False,
) -> npt.NDArray[np.uint32]: ...
def order_idf(df: npt.NDArray[np.uint32], n: int) -> npt.NDArray[np.float32]: ...
def order_embed_part(
    path: str | os.PathLike[str],
    first: int,
    end: int,
    idf: npt.NDArray[np.float32],
    dest: str | os.PathLike[str],
    dim: int = ...,
    max_tokens: int = ...,
    seed: int = ...,
    progress: bool = False,
) -> None: ...
def order_centroids(
    path: str | os.PathLike[str],
    shards: Sequence[str | os.PathLike[str]],
    nlist: int,
    sample: int,
    seed: int = 0,
    progress: bool = True,
) -> npt.NDArray[np.float32]: ...
def order_assign_part(
    path: str | os.PathLike[str],
    shards: Sequence[str | os.PathLike[str]],
    first: int,
    end: int,
    centroids: npt.NDArray[np.float32],
    dest: str | os.PathLike[str],
    progress: bool = False,
) -> npt.NDArray[np.uint32]: ...
def order_list_counts(file: str | os.PathLike[str]) -> npt.NDArray[np.uint32]: ...
def order_plan_groups(
    sizes: npt.NDArray[np.uint64],
    centroids: npt.NDArray[np.float32],
    nprobe: int,
    k: int,
    groups: int,
    memory: int = ...,
) -> list[tuple[list[int], list[list[int]]]]: ...
def order_knn_group(
    parts: Sequence[str | os.PathLike[str]],
    lists: Sequence[int],
    partners: Sequence[Sequence[int]],
    k: int,
    dest: str | os.PathLike[str],
    progress: bool = False,
) -> int: ...
def order_finish_staged(
    path: str | os.PathLike[str],
    name: str,
    shards: Sequence[str | os.PathLike[str]],
    lists: Sequence[str | os.PathLike[str]],
    knn: Sequence[str | os.PathLike[str]],
    settings: dict[str, Any],
    engine: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[Path, dict[str, Any]]: ...
def order_work_dir(path: str | os.PathLike[str], name: str) -> Path: ...
def order_seal(file: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None: ...
def order_check_sealed(path: str | os.PathLike[str]) -> bool: ...
def order_read_knn(
    files: Sequence[str | os.PathLike[str]], n: int, k: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...

@type_check_only
class _StoredOrder(TypedDict):
    path: Path
    docs: npt.NDArray[np.uint64]
    context_starts: npt.NDArray[np.uint64]
    flow: bool
    meta: dict[str, Any] | None

def read_order(path: str | os.PathLike[str], spec: str | os.PathLike[str]) -> _StoredOrder: ...
def write_report_png(report: dict[str, Any], png: str | os.PathLike[str]) -> None: ...
def upload_dataset(
    local: str | os.PathLike[str],
    url: str,
    overwrite: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    storage_options: dict[str, str] | None = None,
    progress: bool = True,
) -> dict[str, int]: ...
def staging_dir(url: str, cache_dir: str | os.PathLike[str] | None = None) -> str: ...
def is_url(path: str) -> bool: ...
def report_summary(report: dict[str, Any]) -> str: ...
