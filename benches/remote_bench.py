"""Remote datasets: a real S3-compatible server (moto's server mode) on loopback, started here.

Measures, for the same tokens, in one run:
- compression: zstd ratio and cost (write, and read through the cache) on real token data
  (Wikipedia lead sections tokenized with a byte-level BPE, see tests/wiki_corpus.py);
- reading through TokenDataset: local, remote with a cold cache, remote with a warm cache
  (steady-state tokens/s and time to first batch), sequential and shuffled.

Run: .venv/bin/python benches/remote_bench.py [--repeat 8] [--shard-mb 16]
Figures and their reading: docs/remote.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tokenloom as tl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from s3_server import S3Server
from wiki_corpus import build as build_wiki


def read_all(path: str, shuffle: bool, **kw: object) -> tuple[float, float, int]:
    """(seconds to the first batch, seconds for the rest, tokens) of one epoch."""
    t0 = time.perf_counter()
    ds = tl.TokenDataset(path, seq_len=2048, batch_size=8, shuffle=shuffle, output="numpy", **kw)
    it = iter(ds)
    first = next(it)
    t1 = time.perf_counter()
    n = first["input_ids"].size
    for b in it:
        n += b["input_ids"].size
    return t1 - t0, time.perf_counter() - t1, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=8, help="copies of the corpus in the dataset")
    ap.add_argument("--shard-mb", type=int, default=16)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tl-remote-bench-"))
    server = S3Server(proxy=False, own_process=True)
    server.make_bucket("bench")
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
            url = f"s3://bench/{comp or 'plain'}"
            t = time.perf_counter()
            tl_up = tl._core.upload_dataset(str(local), url, progress=False)
            up = time.perf_counter() - t
            print(f"  upload: {size / up / 1e6:.0f} MB/s ({tl_up['shards']} shards)")
        raw = sum(p.stat().st_size for p in (work / "local-None").glob("part-*.bin"))
        zst = sum(p.stat().st_size for p in (work / "local-zstd").glob("part-*.bin.zst"))
        print(
            f"zstd ratio on these tokens: {raw / zst:.2f}x ({raw / 1e6:.1f} -> {zst / 1e6:.1f} MB)"
        )
        for shuffle in (False, True):
            print(f"\nTokenDataset seq_len=2048 batch 8, shuffle={shuffle}")
            f, rest, n = read_all(str(work / "local-None"), shuffle)
            print(
                f"  local          first batch {f * 1e3:7.1f} ms, {n / rest / 1e6:7.1f} M tokens/s"
            )
            for comp in ("plain", "zstd"):
                cache = work / f"cache-{comp}-{shuffle}"
                for state in ("cold", "warm"):
                    f, rest, n = read_all(f"s3://bench/{comp}", shuffle, cache_dir=str(cache))
                    print(
                        f"  remote {comp:5} {state} first batch {f * 1e3:7.1f} ms, "
                        f"{n / rest / 1e6:7.1f} M tokens/s"
                    )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
