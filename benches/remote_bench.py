"""Remote datasets: a real S3-compatible server (moto's server mode, in its own process on
loopback), started here.

Measures, for the same tokens, in one run:
- compression: zstd ratio and cost (write, and read through the cache) on real token data
  (Wikipedia lead sections tokenized with a byte-level BPE, see tests/wiki_corpus.py);
- reading through TokenDataset: local, remote with a cold cache, remote with a warm cache
  (steady-state tokens/s and time to first batch), sequential and shuffled;
- with ``--peers``: LitData and MosaicML Streaming reading the same token stream from the same
  server (their own formats, written with ``peer_formats.py``, shards of the same size), cold
  and warm, each in a fresh process (``make bench-remote`` installs them).

Every row delivers windows of 2,049 tokens, 8 per batch (tokenloom: ``seq_len=2048``, the
window is ``input_ids`` plus the last label), counted as window tokens per second over one
epoch after the first batch; the ratio is to tokenloom reading the same tokens locally in the
same order setting.

Run: .venv/bin/python benches/remote_bench.py [--repeat 8] [--shard-mb 16] [--peers]
Figures and their reading: docs/remote.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tokenloom as tl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from s3_server import S3Server
from wiki_corpus import build as build_wiki

BUCKET = "bench"
BATCH = 8
SEQ = 2048
# Peer name -> the module it needs.
PEERS = {"litdata": "litdata", "mosaic-mds": "streaming"}


def timed_epoch(batches: Any, window_tokens: Any) -> tuple[float, float, int]:
    """(seconds to the first batch, seconds for the rest, window tokens after the first) of
    one pass over `batches` (an iterable built lazily: its construction is timed too)."""
    t0 = time.perf_counter()
    it = iter(batches)
    next(it)
    t1 = time.perf_counter()
    n = 0
    for b in it:
        n += window_tokens(b)
    return t1 - t0, time.perf_counter() - t1, n


def tokenloom_epoch(path: str, shuffle: bool, **kw: object) -> tuple[float, float, int]:
    ds = tl.TokenDataset(path, seq_len=SEQ, batch_size=BATCH, shuffle=shuffle, output="numpy", **kw)

    def windows(b: dict[str, np.ndarray]) -> int:
        ids = b["input_ids"]
        return int(ids.size + ids.shape[0])

    return timed_epoch(ds, windows)


def median_epoch(epochs: int, path: str, shuffle: bool, **kw: object) -> tuple[float, float, int]:
    """The epoch of median rate among `epochs` epochs (a new dataset object each)."""
    runs = sorted((tokenloom_epoch(path, shuffle, **kw) for _ in range(epochs)), key=lambda r: r[1])
    return runs[len(runs) // 2]


def open_peer(name: str, url: str, cache: str, shuffle: bool, endpoint: str) -> Any:
    """The peer's streaming dataset over `url` with its local cache at `cache`, in a loader
    of batches of 8 windows (num_workers=0: the peers download in threads of their own)."""
    import torch

    def collate(rows: list[Any]) -> Any:
        return torch.stack([torch.as_tensor(r) for r in rows]).to(torch.int64)

    if name == "litdata":
        import litdata.streaming.downloader as litdata_downloader
        from litdata import StreamingDataLoader, StreamingDataset, TokensLoader

        # LitData's obstore path takes no client options from the caller; the loopback
        # server speaks plain HTTP, which obstore refuses unless allowed (on S3 it is HTTPS).
        litdata_downloader._OBSTORE_CLIENT_OPTIONS = {  # type: ignore[attr-defined]
            **litdata_downloader._OBSTORE_CLIENT_OPTIONS,  # type: ignore[attr-defined]
            "allow_http": True,
        }

        ds = StreamingDataset(
            url,
            cache_dir=cache,
            item_loader=TokensLoader(block_size=SEQ + 1),
            shuffle=shuffle,
            seed=0,
            storage_options={
                "endpoint_url": endpoint,
                "aws_access_key_id": "testing",
                "aws_secret_access_key": "testing",
                "region_name": "us-east-1",
            },
        )
        return StreamingDataLoader(ds, batch_size=BATCH, num_workers=0, collate_fn=collate)
    if name == "mosaic-mds":
        from streaming import StreamingDataLoader, StreamingDataset
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()

        class Mds(StreamingDataset):  # type: ignore[misc]
            def __getitem__(self, i: int) -> Any:
                return super().__getitem__(i)["tokens"]

        ds = Mds(remote=url, local=cache, batch_size=BATCH, shuffle=shuffle, shuffle_seed=0)
        return StreamingDataLoader(ds, batch_size=BATCH, num_workers=0, collate_fn=collate)
    raise ValueError(name)


def peer_child(name: str, url: str, cache: str, shuffle: bool, endpoint: str) -> None:
    """One epoch of peer `name` (run in a fresh process); prints its figures as JSON."""
    __import__(PEERS[name])
    loader = open_peer(name, url, cache, shuffle, endpoint)
    first, rest, n = timed_epoch(loader, lambda b: int(b.numel()))
    print(json.dumps({"first": first, "rest": rest, "tokens": n}))


def run_peer(name: str, url: str, cache: Path, shuffle: bool, server: S3Server) -> dict[str, Any]:
    env = {**os.environ, **server.env(), "S3_ENDPOINT_URL": server.endpoint}
    cmd = [sys.executable, __file__, "--child", name, url, str(cache), str(int(shuffle))]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def upload_dir(server: S3Server, local: Path, prefix: str) -> None:
    for f in sorted(local.rglob("*")):
        if f.is_file():
            key = f"{prefix}/{f.relative_to(local).as_posix()}"
            server.put_object(BUCKET, key, f.read_bytes())


def write_peers(
    names: list[str], tokens: np.ndarray, work: Path, shard_bytes: int, server: S3Server
) -> None:
    from peer_formats import write_litdata, write_mosaic

    corpus = work / "corpus.npy"
    np.save(corpus, tokens)
    os.environ["LOADER_BENCH_CORPUS"] = str(corpus)
    for name in names:
        out = work / f"peer-{name}"
        t = time.perf_counter()
        if name == "litdata":
            write_litdata(tokens, np.array([len(tokens)]), out, chunk_bytes=shard_bytes)
        else:
            write_mosaic(tokens, np.array([len(tokens)]), out, shard_bytes=shard_bytes)
        files = [f for f in out.rglob("*") if f.is_file()]
        print(
            f"write {name}: {len(files)} files, {sum(f.stat().st_size for f in files) / 1e6:.1f} "
            f"MB in {time.perf_counter() - t:.1f} s"
        )
        upload_dir(server, out, name)


def row(label: str, first: float, rest: float, n: int, local: float | None) -> str:
    rate = n / rest / 1e6
    ratio = f"{rate / local:5.2f}" if local else "    1"
    return f"| {label} | {first * 1e3:,.1f} ms | {rate:,.1f} M | {ratio} |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=8, help="copies of the corpus in the dataset")
    ap.add_argument("--shard-mb", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=3, help="warm epochs (the median is shown)")
    ap.add_argument("--peers", action="store_true", help="LitData and Streaming side by side")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        name, url, cache, shuffle = args.child
        endpoint = os.environ["S3_ENDPOINT_URL"]
        peer_child(name, url, cache, shuffle == "1", endpoint)
        return
    work = Path(tempfile.mkdtemp(prefix="tl-remote-bench-"))
    server = S3Server(proxy=False, own_process=True)
    server.make_bucket(BUCKET)
    os.environ.update(server.env())
    try:
        wiki = work / "wiki"
        build_wiki(wiki)
        src = tl.open_dataset(wiki)
        docs = [np.asarray(src[i]) for i in range(len(src))]
        tokens = sum(len(d) for d in docs) * args.repeat
        print(
            f"data: {len(docs) * args.repeat:,} documents, {tokens:,} tokens "
            f"({src.dtype}), shards of {args.shard_mb} MiB"
        )
        for comp in (None, "zstd"):
            local = work / f"local-{comp}"
            t = time.perf_counter()
            with tl.DatasetWriter(
                local,
                dtype=src.dtype,
                eos_id=src.eos_id,
                vocab_size=src.vocab_size,
                shard_bytes=args.shard_mb << 20,
                compression=comp,
            ) as w:
                for _ in range(args.repeat):
                    for d in docs:
                        w.add(d)
            wrote = time.perf_counter() - t
            size = sum(p.stat().st_size for p in local.glob("part-*.bin*"))
            print(
                f"write {comp or 'plain'}: {size / 1e6:.1f} MB of bodies, "
                f"{tokens / wrote / 1e6:.1f} M tokens/s"
            )
            url = f"s3://{BUCKET}/{comp or 'plain'}"
            t = time.perf_counter()
            tl_up = tl._core.upload_dataset(str(local), url, progress=False)
            up = time.perf_counter() - t
            print(f"  upload: {size / up / 1e6:.0f} MB/s ({tl_up['shards']} shards)")
        raw = sum(p.stat().st_size for p in (work / "local-None").glob("part-*.bin"))
        zst = sum(p.stat().st_size for p in (work / "local-zstd").glob("part-*.bin.zst"))
        print(
            f"zstd ratio on these tokens: {raw / zst:.2f}x ({raw / 1e6:.1f} -> {zst / 1e6:.1f} MB)"
        )
        peers = [p for p in PEERS if importlib.util.find_spec(PEERS[p])] if args.peers else []
        if args.peers and len(peers) < len(PEERS):
            missing = sorted(set(PEERS) - set(peers))
            print(f"peers not installed (make bench-remote installs them): {', '.join(missing)}")
        if peers:
            flat = np.concatenate(docs * args.repeat).astype(np.uint16)
            write_peers(peers, flat, work, args.shard_mb << 20, server)
        for shuffle in (False, True):
            print(f"\nshuffle={shuffle}: batches of {BATCH} windows of {SEQ + 1} tokens")
            print("| read | first batch | window tokens/s | ratio to local |\n|---|---|---|---|")
            f, rest, n = median_epoch(args.epochs, str(work / "local-None"), shuffle)
            local_rate = n / rest / 1e6
            print(row("tokenloom, local", f, rest, n, None), flush=True)
            for comp in ("plain", "zstd"):
                cache = work / f"cache-{comp}-{shuffle}"
                url = f"s3://{BUCKET}/{comp}"
                f, rest, n = tokenloom_epoch(url, shuffle, cache_dir=str(cache))
                print(row(f"tokenloom, remote {comp}, cold", f, rest, n, local_rate), flush=True)
                f, rest, n = median_epoch(args.epochs, url, shuffle, cache_dir=str(cache))
                print(row(f"tokenloom, remote {comp}, warm", f, rest, n, local_rate), flush=True)
            for name in peers:
                cache = work / f"cache-{name}-{shuffle}"
                for state in ("cold", "warm"):
                    r = run_peer(name, f"s3://{BUCKET}/{name}", cache, shuffle, server)
                    label = f"{name}, remote, {state}"
                    if "error" in r:
                        print(f"| {label} | failed: {r['error']} | | |", flush=True)
                    else:
                        print(
                            row(label, r["first"], r["rest"], r["tokens"], local_rate), flush=True
                        )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
