"""Training-loader throughput against the loaders users would otherwise pick, in one run.

    make bench-loaders     # = .venv-bench/bin/python benches/loader_bench.py --tokens 1e8

Every contender writes the same synthetic corpus (``--tokens`` uint16 tokens, log-normal
document lengths with median 600, EOS 50256 ending every document) with its own writer, then
delivers ``[8, 2049]`` windows of tokens as int64 torch tensors:

- ``tokenloom``: ``TokenDataset(mode="concat", seq_len=2048, batch_size=8)``. It yields the
  whole training dict (``input_ids``/``labels`` ``[8, 2048]``, ``position_ids``,
  ``doc_ids``, ``cu_seqlens``), i.e. more output than the raw windows most peers yield.
- ``tokenloom-lean``: the same with ``outputs=()``: only ``input_ids`` and ``labels``.
- ``tokenloom-1t``: ``threads=1``: one assembly thread (the default is 2), so in process it
  uses one core besides the trainer's, like the peers at ``num_workers=0``.
- ``tokenloom-dl``: at ``num_workers=0`` wrapped in ``DataLoader(batch_size=None,
  num_workers=0)`` as the peers are (with workers every tokenloom row goes through a
  DataLoader already, so these rows run at ``num_workers=0`` only).
- ``tokenloom-1t-dl``: both: one assembly thread inside ``DataLoader(num_workers=0)``, the
  setting that matches the peers' single-threaded in-DataLoader reading.
- ``nanogpt-memmap``: nanoGPT-style flat ``.bin`` read through ``np.memmap``; a map-style
  dataset slices a window, widens it to int64, and the DataLoader collates 8 of them.
- ``megatron-indexed``: megatron-core ``IndexedDatasetBuilder`` ``.bin/.idx`` and
  ``GPTDataset``'s document/sample/shuffle index; the raw int64 window of each sample.
- ``megatron-gpt``: the same ``GPTDataset`` as Megatron trains with it (``__getitem__``:
  ``tokens``, ``labels``, ``loss_mask``, ``position_ids``); the training-dict counterpart.
- ``litdata``: ``optimize()`` with ``TokensLoader`` chunks, ``StreamingDataset`` +
  ``StreamingDataLoader``.
- ``mosaic-mds``: MosaicML Streaming ``MDSWriter`` of pre-cut 2049-token samples,
  ``StreamingDataset`` + ``StreamingDataLoader``.
- ``hf-arrow``: HF ``datasets`` Arrow table of 2049-token blocks (``save_to_disk``),
  ``load_from_disk`` with the torch format, and a DataLoader.

"sequential" is each loader's own order without shuffling (Megatron's sample index is always
shuffled internally); "shuffled" turns on the loader's shuffle. Each configuration runs in a
fresh process: time to first batch (construction, index building, worker start), then batches
timed for at least ``--seconds`` (a new epoch starts when one runs out), peak RSS of the main
process and of the largest DataLoader worker. The first batch of every run is checked
(int64, shape, in sequential order the corpus's first window where the loader keeps it).
The machine's ceiling, numpy widening uint16 -> int64 on one core, is measured in the same run.
Results go to ``--out``/results.json and a markdown table on stdout. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from peer_formats import EOS, SEQ, VOCAB, WIN, WRITERS, make_corpus

BATCH = 8
CONTENDERS = [
    "tokenloom",
    "tokenloom-lean",
    "tokenloom-1t",
    "tokenloom-dl",
    "tokenloom-1t-dl",
    "nanogpt-memmap",
    "megatron-indexed",
    "megatron-gpt",
    "litdata",
    "mosaic-mds",
    "hf-arrow",
]
# Which directory each contender reads (megatron-gpt reads megatron-indexed's files).
FILES = {"megatron-gpt": "megatron-indexed"} | {
    n: "tokenloom" for n in CONTENDERS if n.startswith("tokenloom-")
}
# tokenloom rows that differ from the plain one only without DataLoader workers.
IN_PROCESS_ONLY = ("tokenloom-dl", "tokenloom-1t-dl")


IMPORTS = {
    "tokenloom": "tokenloom",
    "tokenloom-lean": "tokenloom",
    "tokenloom-1t": "tokenloom",
    "tokenloom-dl": "tokenloom",
    "tokenloom-1t-dl": "tokenloom",
    "nanogpt-memmap": "torch",
    "megatron-indexed": "megatron.core",
    "megatron-gpt": "megatron.core",
    "litdata": "litdata",
    "mosaic-mds": "streaming",
    "hf-arrow": "datasets",
}


# ---------------------------------------------------------------- loaders (child process)


def _long_collate(samples: list[Any]) -> Any:
    import torch
    from torch.utils.data import default_collate

    batch = default_collate(samples)
    if isinstance(batch, dict):
        return batch
    return batch.to(torch.int64)


class _Memmap:
    """nanoGPT's read path (``np.memmap`` slice, ``astype(int64)``, stack) as a map-style
    dataset of windows overlapping by one token; one memmap per batch, as nanoGPT does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.n = (path.stat().st_size // 2 - 1) // SEQ

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, ids: list[int]) -> list[Any]:
        import torch

        mm = np.memmap(self.path, dtype=np.uint16, mode="r")
        return [torch.from_numpy(mm[i * SEQ : i * SEQ + WIN].astype(np.int64)) for i in ids]


class _MegatronRaw:
    """GPTDataset's sample plan, the raw window of each sample."""

    def __init__(self, gpt: Any) -> None:
        self.gpt = gpt

    def __len__(self) -> int:
        return len(self.gpt)

    def __getitem__(self, i: int) -> Any:
        import torch

        text, _ = self.gpt._query_document_sample_shuffle_indices(i)
        return torch.from_numpy(text.astype(np.int64))


def _megatron(path: Path) -> Any:
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.core.datasets.utils import Split

    class Tok:
        vocab_size = VOCAB
        eod = EOS
        pad = -1
        unique_identifiers: ClassVar[dict[str, str]] = {"class": "loader_bench"}

    cache = path / "cache"
    cache.mkdir(exist_ok=True)
    config = GPTDatasetConfig(
        random_seed=0,
        sequence_length=SEQ,
        split="100,0,0",
        path_to_cache=str(cache),
        tokenizer=Tok(),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
    )
    indexed = IndexedDataset(str(path / "train"))
    docs = np.arange(len(indexed.document_indices) - 1, dtype=np.int32)
    return GPTDataset(indexed, str(path / "train"), docs, None, Split.train, config)


def open_loader(name: str, path: Path, shuffle: bool, workers: int) -> Any:
    import torch
    from torch.utils.data import DataLoader

    common: dict[str, Any] = {"num_workers": workers, "collate_fn": _long_collate}
    if name.startswith("tokenloom"):
        import tokenloom as tl
        from tokenloom.loader import OPTIONAL_OUTPUTS

        outputs = () if name == "tokenloom-lean" else OPTIONAL_OUTPUTS
        threads = 1 if "-1t" in name else 2
        ds = tl.TokenDataset(
            path, seq_len=SEQ, batch_size=BATCH, shuffle=shuffle, seed=0, outputs=outputs,
            threads=threads,
        )  # fmt: skip
        if workers == 0 and not name.endswith("-dl"):
            return ds
        return DataLoader(ds, batch_size=None, num_workers=workers)
    if name == "nanogpt-memmap":
        return DataLoader(_Memmap(path / "train.bin"), BATCH, shuffle=shuffle, **common)
    if name == "megatron-indexed":
        return DataLoader(_MegatronRaw(_megatron(path)), BATCH, shuffle=shuffle, **common)
    if name == "megatron-gpt":
        return DataLoader(_megatron(path), BATCH, shuffle=shuffle, **common)
    if name == "litdata":
        from litdata import StreamingDataLoader, StreamingDataset, TokensLoader

        ds = StreamingDataset(
            str(path), item_loader=TokensLoader(block_size=WIN), shuffle=shuffle, seed=0
        )
        return StreamingDataLoader(ds, batch_size=BATCH, **common)
    if name == "mosaic-mds":
        from streaming import StreamingDataLoader, StreamingDataset
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()

        class Mds(StreamingDataset):  # type: ignore[misc]
            def __getitem__(self, i: int) -> Any:
                return torch.from_numpy(super().__getitem__(i)["tokens"].astype(np.int64))

        ds = Mds(local=str(path), batch_size=BATCH, shuffle=shuffle, shuffle_seed=0)
        return StreamingDataLoader(ds, batch_size=BATCH, **common)
    if name == "hf-arrow":
        import datasets

        hf = datasets.load_from_disk(str(path)).with_format("torch")

        def collate(rows: list[dict[str, Any]]) -> Any:
            return torch.stack([r["input_ids"] for r in rows]).to(torch.int64)

        return DataLoader(hf, BATCH, shuffle=shuffle, num_workers=workers, collate_fn=collate)
    raise ValueError(name)


def window_of(name: str, batch: Any) -> tuple[Any, int]:
    """(the tensor whose first row is checked, window tokens delivered in the batch)."""
    if name.startswith("tokenloom"):
        ids = batch["input_ids"]
        return ids, ids.numel() + ids.shape[0]
    if name == "megatron-gpt":
        ids = batch["tokens"]
        return ids, ids.numel() + ids.shape[0]
    return batch, batch.numel()


def child(name: str, path: Path, order: str, workers: int, seconds: float, corpus: Path) -> None:
    import torch

    t0 = time.perf_counter()
    __import__(IMPORTS[name])
    t1 = time.perf_counter()
    loader = open_loader(name, path, order == "shuffled", workers)
    it = iter(loader)
    first = next(it)
    t2 = time.perf_counter()
    ids, _ = window_of(name, first)
    ok = ids.dtype == torch.int64 and ids.shape[0] == BATCH and int(ids.max()) < VOCAB
    if order == "sequential" and name not in ("megatron-indexed", "megatron-gpt"):
        head = np.load(corpus, mmap_mode="r")[: ids.shape[1]].astype(np.int64)
        ok = ok and bool(np.array_equal(ids[0].numpy(), head))
    n_batches = n_tokens = 0
    start = time.perf_counter()
    while True:
        for batch in it:
            n_batches += 1
            n_tokens += window_of(name, batch)[1]
            if time.perf_counter() - start >= seconds and n_batches >= 50:
                break
        else:
            it = iter(loader)
            continue
        break
    elapsed = time.perf_counter() - start
    del it, loader
    with open("/proc/self/status") as fh:
        status = dict(line.split(":", 1) for line in fh)
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "mtok_s": n_tokens / elapsed / 1e6,
                "first_ms": (t2 - t1) * 1e3,
                "import_s": t1 - t0,
                "rss_mb": int(status["VmHWM"].split()[0]) / 1024,
                "worker_rss_mb": worker if workers else None,
                "batches": n_batches,
                "check": ok,
            }
        )
    )


# ---------------------------------------------------------------- driver


def ceiling(tokens: np.ndarray) -> float:
    """numpy widening uint16 -> int64 on one core, M tokens/s (median of 5)."""
    dst = np.empty(len(tokens), dtype=np.int64)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(dst, tokens, casting="safe")
        times.append(time.perf_counter() - t)
    return len(tokens) / statistics.median(times) / 1e6


def available(name: str) -> bool:
    try:
        __import__(IMPORTS[name])
    except ImportError:
        return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=float, default=1e8)
    ap.add_argument("--out", type=Path, default=Path("bench-out/loaders"))
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--only", default=",".join(CONTENDERS))
    ap.add_argument("--child", nargs=4, metavar=("NAME", "PATH", "ORDER", "WORKERS"))
    args = ap.parse_args()
    corpus = args.out / "corpus.npy"
    if args.child:
        name, path, order, workers = args.child
        child(name, Path(path), order, int(workers), args.seconds, corpus)
        return 0

    names = [n for n in args.only.split(",") if n]
    missing = [n for n in names if not available(n)]
    names = [n for n in names if n not in missing]
    if missing:
        print(f"not installed, skipped: {', '.join(missing)} (make bench-loaders installs them)")
    args.out.mkdir(parents=True, exist_ok=True)
    tokens, lengths = make_corpus(int(args.tokens), seed=20240601)
    np.save(corpus, tokens)
    os.environ["LOADER_BENCH_CORPUS"] = str(corpus)
    print(f"corpus: {len(tokens):,} tokens, {len(lengths):,} documents")
    writes: dict[str, float] = {}
    for name in names:
        if name not in WRITERS:
            continue
        out = args.out / name
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        WRITERS[name](tokens, lengths, out)
        writes[name] = time.perf_counter() - t
        print(f"  {name} wrote in {writes[name]:.2f}s", flush=True)
    for path in args.out.iterdir():  # warm the page cache for every contender alike
        for f in path.rglob("*") if path.is_dir() else [path]:
            if f.is_file():
                with open(f, "rb") as fh:
                    while fh.read(1 << 24):
                        pass
    ceil = ceiling(tokens)
    print(f"ceiling: numpy uint16 -> int64 widening {ceil:,.0f} M tokens/s (one core)")

    configs = [(o, w) for o in ("sequential", "shuffled") for w in (0, 2)]
    runs: dict[str, list[dict[str, Any]]] = {}
    for rep in range(args.repeats):
        for name in names:
            for order, workers in configs:
                if workers and name in IN_PROCESS_ONLY:
                    continue
                key = f"{name}|{order}|{workers}"
                cmd = [sys.executable, __file__, "--out", str(args.out), "--seconds"]
                cmd += [str(args.seconds), "--child", name]
                cmd += [str(args.out / FILES.get(name, name)), order, str(workers)]
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
                if proc.returncode != 0 or not lines:
                    print(f"  {key} failed:\n{proc.stderr[-2000:]}", flush=True)
                    continue
                res = json.loads(lines[-1])
                runs.setdefault(key, []).append(res)
                print(f"  [{rep}] {key}: {res['mtok_s']:.1f} M tok/s", flush=True)

    def med(key: str, field: str) -> float | None:
        vals = [r[field] for r in runs.get(key, []) if r[field] is not None]
        return statistics.median(vals) if vals else None

    print()
    print(
        f"{len(tokens) / 1e6:.0f} M tokens, int64 [8, 2049] batches, M tokens/s "
        f"(median of {args.repeats}); ceiling {ceil:,.0f} M tokens/s\n"
    )
    head = "| loader | seq w=0 | seq w=2 | shuf w=0 | shuf w=2 | first batch ms (seq w=0) "
    head += "| peak RSS MiB (seq w=0) | write s | check |"
    print(head)
    print("|" + " --- |" * 9)
    for name in names:
        cells = []
        for order, workers in configs:
            v = med(f"{name}|{order}|{workers}", "mtok_s")
            cells.append("-" if v is None else f"{v:,.1f}")
        first = med(f"{name}|sequential|0", "first_ms")
        rss = med(f"{name}|sequential|0", "rss_mb")
        checks = {r["check"] for k, rs in runs.items() if k.startswith(name + "|") for r in rs}
        write = writes.get(FILES.get(name, name))
        tail = ["-"] * 4
        if first is not None and rss is not None and write is not None:
            tail = [f"{first:.1f}", f"{rss:.0f}", f"{write:.2f}", str(all(checks))]
        print(f"| {name} | " + " | ".join(cells + tail) + " |")
    for ours_name in [n for n in names if n.startswith("tokenloom")]:
        print(f"\nratio {ours_name} / fastest peer:")
        for order, workers in configs:
            ours = med(f"{ours_name}|{order}|{workers}", "mtok_s")
            peers = {
                n: med(f"{n}|{order}|{workers}", "mtok_s")
                for n in names
                if not n.startswith("tokenloom")
            }
            peers = {n: v for n, v in peers.items() if v is not None}
            if ours is None or not peers:
                continue
            best = max(peers, key=lambda n: peers[n] or 0.0)
            print(f"  {order} w={workers}: {ours / peers[best]:.1f}x ({best} {peers[best]:.1f})")
        ours = med(f"{ours_name}|sequential|0", "mtok_s")
        if ours is not None:
            cores = "one assembly thread" if "-1t" in ours_name else "two assembly threads"
            print(f"  sequential w=0 vs the one-core widening ceiling: {ours / ceil:.0%} ({cores})")
    (args.out / "results.json").write_text(
        json.dumps({"ceiling_mtok_s": ceil, "writes_s": writes, "runs": runs}, indent=1)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
