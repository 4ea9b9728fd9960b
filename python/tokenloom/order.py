"""In-Context Pretraining order (Shi et al. 2023): related documents share a training
context. ``order`` writes ``<dataset>/orders/<name>.order``; ``TokenDataset(...,
order=name)`` reads it, and with ``shuffle=True`` shuffles whole contexts so that
consecutive contexts are unrelated. ``order_report`` reads the quality report back and can
draw its histogram."""

from __future__ import annotations

import importlib
import operator
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from tokenloom import _core
from tokenloom.embedders import embedder

PathLike = str | os.PathLike[str]
Embedder = Callable[[list[str]], Any]
Decoder = Callable[[list[int]], str]


# The core's defaults (rust/core/src/order/defaults.rs), defined there once.
_D = _core.ORDER_DEFAULTS


def order(
    dataset: PathLike,
    seq_len: int = _D["seq_len"],
    *,
    k: int = _D["k"],
    name: str = _D["name"],
    embeddings: PathLike | Sequence[PathLike] | np.ndarray | Embedder | None = None,
    knn: PathLike | np.ndarray | None = None,
    knn_similarities: PathLike | np.ndarray | None = None,
    drop_self: bool = False,
    tokenizer: Any = None,
    batch_size: int = 256,
    dedup: float | None = _D["dedup"],
    variant: str = _D["variant"],
    max_segment: int = _D["max_segment"],
    exact: bool | None = None,
    dim: int = _D["dim"],
    max_tokens: int = _D["max_tokens"],
    seed: int = _D["seed"],
    progress: bool = True,
    engine: str = "local",
    partitions: int | None = None,
    nprobe: int | None = None,
    task_memory: int = _D["task_memory"],
    score_with: str | PathLike | np.ndarray | Embedder | None = None,
    labels: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, Any]:
    """Orders ``dataset`` for In-Context Pretraining and returns the report.

    ``embeddings`` may also name a dense text embedder of :func:`tokenloom.embedder`
    (``"minilm"``, ``"minilm-static"``; the text is decoded with ``tokenizer``).
    ``score_with`` (an embedder name, a callable, or ``[N, d]`` vectors / ``.npy``) and
    ``labels`` (one per document, ``None`` for none) add the independent score to the
    report (``report["independent"]``, see :func:`order_report`); score with an embedder
    other than the one that built the order.

    Embeddings come from the built-in model-free embedder over token ids (default; ``dim``,
    ``max_tokens``), from ``embeddings`` — an ``[N, d]`` float array, a ``.npy`` file (memory
    mapped) or a callable ``list[str] -> [b, d]`` applied to the documents' text in batches
    of ``batch_size`` (text decoded with ``tokenizer``: a ``tokenizers.Tokenizer``, a path to
    a ``tokenizer.json`` or a callable ``list[int] -> str``) — or the kNN graph is given
    directly: ``knn`` ``[N, k]`` neighbour ids (``-1``: none; ``drop_self=True`` accepts
    faiss output that lists each query first) with optional ``knn_similarities``.

    Documents whose similarity to an already kept neighbour is at least ``dedup`` are left
    out (``None`` keeps all). ``variant="paper"`` walks the undirected graph from
    minimum-degree documents (ties broken by ``seed``); ``"reference"`` reproduces the
    public script (lowest-id starts, 9 neighbours, segments of 21, short ones merged).

    ``engine="ray"`` orders on Ray (``pip install "tokenloom[ray]"``; joins the running Ray
    instance or ``RAY_ADDRESS``, else starts one here) and ``engine="disk"`` in this process,
    both with vectors and kNN lists kept on disk in ``partitions`` parts (default: 4 per CPU,
    at least 20,000 documents each): the built-in embedder in two passes, inverted lists
    trained on a sample, each part's documents assigned to lists, the kNN of each group of
    lists searched in its ``nprobe`` nearest lists wherever they lie (default
    ``_core.ORDER_DEFAULTS["nprobe"]``; every list below 20,000 documents; more groups than
    parts when one would hold over ``task_memory`` bytes of vectors), one global walk
    (see ``tokenloom.order_ray``). ``embeddings`` may then also be a list of ``.npy`` shards
    (float16 or float32, one row per document, in document order). They need embeddings
    (built-in or given), not a ``knn`` matrix. A stopped run resumes where it stopped.
    """
    root = Path(dataset)
    k = _positive(k, "k")
    if engine not in ("local", "ray", "disk"):
        raise ValueError(f'engine must be "local", "ray" or "disk", got {engine!r}')
    if engine != "local":
        if score_with is not None or labels is not None:
            raise ValueError(
                'score_with= and labels= are settings of engine="local"; score an order of '
                f'engine="{engine}" afterwards with tl.order_report(dataset, name, '
                "score_with=..., labels=...)"
            )
        partitions = _check_staged(root, knn, partitions, engine)
        if isinstance(embeddings, (list, tuple)) or (
            isinstance(embeddings, (str, os.PathLike)) and not _is_name(embeddings)
        ):
            return _staged(
                root,
                name,
                seq_len,
                k,
                embeddings,
                dedup,
                variant,
                max_segment,
                seed,
                dim,
                max_tokens,
                partitions,
                engine,
                progress,
                nprobe=nprobe,
                task_memory=task_memory,
            )
    elif partitions is not None or nprobe is not None:
        what = "partitions=" if partitions is not None else "nprobe="
        raise ValueError(f'{what} is a setting of engine="ray" and engine="disk"')
    source: dict[str, Any] = {}
    emb: np.ndarray | None = None
    ids: np.ndarray | None = None
    sims: np.ndarray | None = None
    if embeddings is not None and knn is not None:
        raise ValueError("give embeddings or knn, not both")
    if _is_name(embeddings):
        embeddings = embedder(str(embeddings))
    if callable(embeddings):
        emb = _embed_text(root, embeddings, tokenizer, batch_size, progress)
        source = {"embeddings": f"callable {getattr(embeddings, '__qualname__', '?')}"}
    elif isinstance(embeddings, (list, tuple)):
        raise ValueError('a list of embedding shards is read by engine="disk" or engine="ray"')
    elif embeddings is not None:
        one = cast("PathLike | np.ndarray", embeddings)  # a list was refused above
        emb, source["embeddings"] = _load(one, "embeddings")
        if emb.ndim != 2:
            raise ValueError(f"embeddings must be [N, d], got shape {emb.shape}")
        # float32 and float16 are read in place (a memory map stays one); others become float32.
        keep = emb.dtype if emb.dtype in (np.float16, np.float32) else np.float32
        emb = np.ascontiguousarray(emb, dtype=keep)
        source["dim"] = int(emb.shape[1])
    elif knn is not None:
        ids, source["knn"] = _load(knn, "knn")
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"knn must be an [N, k] integer array, got {ids.dtype} {ids.shape}")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if knn_similarities is not None:
            sims, source["knn_similarities"] = _load(knn_similarities, "knn_similarities")
            if sims.shape != ids.shape:
                raise ValueError(f"knn_similarities has shape {sims.shape} but knn has {ids.shape}")
            sims = np.ascontiguousarray(sims, dtype=np.float32)
    else:
        source = {"embeddings": "builtin", "dim": dim, "max_tokens": max_tokens}
    if engine != "local":

        def staged(shards: list[Path] | None) -> dict[str, Any]:
            return _staged(
                root, name, seq_len, k, shards, dedup, variant, max_segment, seed, dim,
                max_tokens, partitions, engine, progress, source, nprobe, task_memory,
            )  # fmt: skip

        if emb is None:
            return staged(None)
        # An array in memory becomes one shard next to the order while it is made.
        tmp = root / "orders" / f".{name}.given.npy"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp, emb)
        try:
            return staged([tmp])
        finally:
            tmp.unlink(missing_ok=True)
    score, names = _scoring(root, score_with, labels, tokenizer, batch_size, progress)
    _, report = _core.order_dataset(
        root,
        int(seq_len),
        name=name,
        k=int(k),
        dedup=None if dedup is None else float(dedup),
        variant=variant,
        max_segment=int(max_segment),
        seed=int(seed),
        exact=exact,
        dim=int(dim),
        max_tokens=int(max_tokens),
        embeddings=emb,
        knn=ids,
        knn_similarities=sims,
        drop_self=drop_self,
        source=source,
        progress=progress,
        score_vectors=score,
        score_name=names[0],
        labels=names[1],
    )
    return _with_text(report)


def _with_text(report: dict[str, Any], path: PathLike | None = None) -> dict[str, Any]:
    """Adds ``text``: the report's summary line (the first line ``tokenloom order`` prints,
    near-duplicates left out included); an order written by ``write_order`` has no report,
    and says so."""
    big = (
        "settings",
        "duplicate_pairs",
        "docs_in_order",
        "segment_starts",
        "path",
        "text",
        "independent",
    )
    fields = {k: v for k, v in report.items() if k not in big}
    if fields:
        line = _core.report_summary(fields)
    else:  # an order from write_order records no report of its own
        line = "an order written by write_order (no report of its own)"
    report["text"] = line if path is None else f"{path}: {line}"
    return report


def _is_name(x: object) -> bool:
    """A bare name (no path separator, no suffix) is an embedder's, not a file's."""
    return isinstance(x, str) and os.sep not in x and "." not in x


def _scoring(
    root: Path,
    score_with: Any,
    labels: Any,
    tokenizer: Any,
    batch_size: int,
    progress: bool,
) -> tuple[np.ndarray | None, tuple[str, np.ndarray | None]]:
    """The scoring vectors (``[N, d]`` float32) with their name, and the labels as ids."""
    vectors, name = None, ""
    if _is_name(score_with):
        score_with = embedder(str(score_with))
    if callable(score_with):
        name = str(getattr(score_with, "name", getattr(score_with, "__qualname__", "callable")))
        vectors = _embed_text(root, score_with, tokenizer, batch_size, progress)
    elif score_with is not None:
        vectors, name = _load(score_with, "score_with")
        if vectors.ndim != 2:
            raise ValueError(f"score_with vectors must be [N, d], got shape {vectors.shape}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = None
    if labels is not None:
        values = list(labels)
        codes: dict[Any, int] = {}
        ids = np.array(
            [-1 if v is None else codes.setdefault(v, len(codes)) for v in values], dtype=np.int64
        )
    return vectors, (name, ids)


def _positive(x: object, name: str) -> int:
    """``x`` as an int of at least 1 (numpy integers too), else a ValueError naming it."""
    try:
        if isinstance(x, bool):
            raise TypeError
        n = operator.index(x)  # type: ignore[arg-type]
    except TypeError:
        n = 0
    if n < 1:
        raise ValueError(f"{name} must be a positive integer, got {x!r}")
    return n


def _check_staged(root: Path, knn: object, partitions: int | None, engine: str) -> int | None:
    """Refuses what the staged engines cannot do before any work, Ray missing included."""
    if knn is not None:
        raise ValueError(
            f'engine="{engine}" works from embeddings, and a knn= matrix has none: '
            'pass embeddings= (or none, for the built-in ones), or use engine="local"'
        )
    if partitions is not None:
        docs = len(_core.open_dataset(root))
        partitions = _positive(partitions, "partitions")
        if partitions > docs:
            raise ValueError(
                f"partitions={partitions} exceeds the {docs} documents of {root}; "
                "use fewer partitions (or None for the default)"
            )
    if engine == "ray":
        from tokenloom.ray_tasks import import_ray

        import_ray()
    return partitions


def _staged(
    root: Path,
    name: str,
    seq_len: int,
    k: int,
    shards: PathLike | Sequence[PathLike] | None,
    dedup: float | None,
    variant: str,
    max_segment: int,
    seed: int,
    dim: int,
    max_tokens: int,
    partitions: int | None,
    engine: str,
    progress: bool,
    source: dict[str, Any] | None = None,
    nprobe: int | None = None,
    task_memory: int = _D["task_memory"],
) -> dict[str, Any]:
    from tokenloom.order_ray import order_staged, staged_settings

    files = None
    if shards is not None:
        given = [shards] if isinstance(shards, (str, os.PathLike)) else list(shards)
        files = [Path(f).resolve() for f in given]
        source = source or {"embeddings": [str(f) for f in files]}
    settings = staged_settings(
        seq_len, k, dedup=dedup, variant=variant, max_segment=max_segment, seed=seed
    )
    source = source or {"embeddings": "builtin", "dim": dim, "max_tokens": max_tokens}
    embed = {
        "dim": int(dim),
        "max_tokens": int(max_tokens),
        "nprobe": nprobe,
        "task_memory": _positive(task_memory, "task_memory"),
    }
    return _with_text(
        order_staged(root, name, settings, files, source, embed, partitions, engine, progress)
    )


def order_report(
    dataset: PathLike,
    name: str = "iclm",
    *,
    png: PathLike | None = None,
    score_with: str | PathLike | np.ndarray | Embedder | None = None,
    labels: Sequence[Any] | np.ndarray | None = None,
    tokenizer: Any = None,
    seq_len: int | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, Any]:
    """The report and settings of the order ``name`` (or an order file) of ``dataset``:
    adjacent-document similarity inside contexts against a random order, near-duplicate
    counts, path and restart statistics, the order itself (``docs_in_order``,
    ``segment_starts``: lists of ints) and ``text``, the summary line (near-duplicates left
    out included). Every value is JSON-safe (``json.dumps`` takes the report as it is).
    With ``png``, also draws the two similarity histograms there (the chart of
    ``tokenloom order --png``, written atomically).

    That similarity uses the vectors that built the order, so it restates the walk's
    objective. ``score_with`` scores the order independently, with an embedder that did not
    build it: a name of :func:`tokenloom.embedder` or a callable ``list[str] -> [b, d]``
    (text decoded with ``tokenizer``), or ``[N, d]`` vectors (an array or ``.npy``), one row
    per document of the dataset. ``report["independent"]["similarity"]`` then holds the
    mean cosine of adjacent documents in rows (``ordered``), the same documents at random
    (``random``), each document's nearest neighbour (``nearest``), ``difference =
    ordered - random`` and ``normalised = (ordered - random) / (nearest - random)``: 0 at
    random, 1 when every document sits next to its nearest neighbour. ``labels`` (one per
    document, ``None`` for none) add ``report["independent"]["labels"]``: the share of
    adjacent pairs in rows with the same label, in order and at random, their difference
    and the chance level. Rows are ``seq_len + 1`` tokens (default: the order's)."""
    stored = _core.read_order(Path(dataset), Path(name))
    path, meta = stored["path"], stored["meta"]
    scoring = score_with is not None or labels is not None
    if meta is None and (png is not None or not scoring):
        raise ValueError(
            f"{path} carries no report (it was written by write_order); "
            "score_with= or labels= (with seq_len=) score it"
        )
    meta = meta or {"report": {}}
    if png is not None:
        _core.write_report_png(meta["report"], Path(png))
    report: dict[str, Any] = meta["report"]
    report["settings"] = {k: v for k, v in meta.items() if k not in ("report", "duplicates")}
    report["duplicate_pairs"] = meta.get("duplicates", [])
    report["path"] = str(path)
    report["docs_in_order"] = stored["docs"].tolist()
    report["segment_starts"] = stored["context_starts"].tolist()
    if scoring:
        root = Path(dataset)
        vectors, (scorer, ids) = _scoring(root, score_with, labels, tokenizer, batch_size, progress)
        report["independent"] = _core.score_order(
            root,
            Path(name),
            seq_len=seq_len,
            vectors=vectors,
            name=scorer,
            labels=ids,
            progress=progress,
        )
    return _with_text(report, path)


def _load(x: PathLike | np.ndarray, what: str) -> tuple[np.ndarray, str]:
    if isinstance(x, np.ndarray):
        return x, f"array {list(x.shape)}"
    path = Path(x)
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read {what} as a .npy file ({e})") from e
    return np.asarray(arr), f"{path} {list(arr.shape)}"


def _decoder(tokenizer: Any) -> Callable[[Sequence[list[int]]], list[str]]:
    if tokenizer is None:
        raise ValueError(
            "embeddings=callable needs the documents' text: pass tokenizer= (a tokenizers."
            "Tokenizer, a tokenizer.json path or a callable list[int] -> str)"
        )
    if isinstance(tokenizer, (str, os.PathLike)):
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(os.fspath(tokenizer))
    if hasattr(tokenizer, "decode_batch"):
        tok = tokenizer
        return lambda docs: list(tok.decode_batch([list(d) for d in docs]))
    if callable(tokenizer):
        fn = tokenizer
        return lambda docs: [fn(list(d)) for d in docs]
    raise TypeError(f"tokenizer must be a Tokenizer, a path or a callable, got {type(tokenizer)}")


def _embed_text(
    root: Path, embed: Embedder, tokenizer: Any, batch_size: int, progress: bool
) -> np.ndarray:
    decode = _decoder(tokenizer)
    ds = _core.open_dataset(root)
    n = len(ds)
    bar = None
    if progress:
        try:
            tqdm: Any = importlib.import_module("tqdm.auto").tqdm
            bar = tqdm(total=n, desc="embedding documents", unit="doc", leave=False)
        except ImportError:
            bar = None
    rows: list[np.ndarray] = []
    try:
        for start in range(0, n, batch_size):
            docs = [ds[i].tolist() for i in range(start, min(start + batch_size, n))]
            out = np.asarray(embed(decode(docs)), dtype=np.float32)
            if out.ndim != 2 or out.shape[0] != len(docs):
                raise ValueError(
                    f"the embedder returned shape {out.shape} for {len(docs)} documents "
                    f"(documents {start}..{start + len(docs) - 1}); it must return [batch, d]"
                )
            rows.append(out)
            if bar is not None:
                bar.update(len(docs))
    finally:
        if bar is not None:
            bar.close()
    return np.concatenate(rows) if rows else np.zeros((0, 1), dtype=np.float32)
