"""Build throughput against the tokenizer's own batch-encoding rate on the same texts.

The corpus is the ``.py`` files of Python's standard library (site-packages excluded; nothing is
downloaded), written as ``--files`` ``.jsonl`` files; a byte-level BPE is trained on part of it
with ``tokenizers``. The baseline only encodes texts already in memory, in batches of 1,000,
with ``encode_batch_fast`` (the tokenizer's fastest batch call; ``encode_batch`` is timed too);
the build also reads and parses the JSON, appends the EOS, writes and fsyncs the shards and the
provenance, and merges. Baseline and build alternate for ``--rounds`` rounds and the best time
of each is compared, so that load from other processes hurts both sides alike.

CPU seconds (this process and its workers) are printed too: they are less disturbed by other
programs than wall time, and show the build's own overhead.

    python benches/build_bench.py [--workers 1] [--repeat 2] [--every 1] [--files 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import tokenloom as tl
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from stdlib_corpus import train_tokenizer


def corpus_texts(repeat: int, every: int) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)[::every]
    raw = (p.read_bytes() for p in files)
    return [b.decode("utf-8", errors="replace") for b in raw if b.strip()] * repeat


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (build workers)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def encode_all(tok: Tokenizer, texts: list[str], fast: bool) -> tuple[float, float, int]:
    c0, t0 = cpu_seconds(), time.perf_counter()
    n = 0
    call = tok.encode_batch_fast if fast else tok.encode_batch
    for i in range(0, len(texts), 1000):
        n += sum(len(e.ids) for e in call(texts[i : i + 1000], add_special_tokens=False))
    return time.perf_counter() - t0, cpu_seconds() - c0, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2, help="copies of the stdlib in the corpus")
    ap.add_argument("--every", type=int, default=1, help="take every n-th stdlib file")
    ap.add_argument("--files", type=int, default=8, help="JSONL files the corpus is split into")
    ap.add_argument("--rounds", type=int, default=3, help="alternating timings; best is kept")
    args = ap.parse_args()
    texts = corpus_texts(args.repeat, args.every)
    tmp = Path(tempfile.mkdtemp(prefix="tl-build-bench-"))
    try:
        tok_path = tmp / "tokenizer.json"
        train_tokenizer(texts[:300], 8192, tok_path)
        tok = Tokenizer.from_file(str(tok_path))
        inputs = []
        per = -(-len(texts) // args.files)
        for k in range(args.files):
            path = tmp / f"corpus-{k:03d}.jsonl"
            with path.open("w", encoding="utf-8") as f:
                for t in texts[k * per : (k + 1) * per]:
                    f.write(json.dumps({"text": t}) + "\n")
            inputs.append(path)
        mb = sum(p.stat().st_size for p in inputs) / 1e6

        fast: list[float] = []
        slow: list[float] = []
        ours: list[float] = []
        cpu_fast: list[float] = []
        cpu_ours: list[float] = []
        n_tokens = 0
        for _ in range(args.rounds):
            t, c, n_tokens = encode_all(tok, texts, fast=True)
            fast.append(t)
            cpu_fast.append(c)
            slow.append(encode_all(tok, texts, fast=False)[0])
            shutil.rmtree(tmp / "out", ignore_errors=True)
            c0, t0 = cpu_seconds(), time.perf_counter()
            r = tl.build(inputs, tmp / "out", tok_path, workers=args.workers, progress=False)
            ours.append(time.perf_counter() - t0)
            cpu_ours.append(cpu_seconds() - c0)
            assert r.num_tokens == n_tokens + r.num_docs, (r.num_tokens, n_tokens, r.num_docs)

        def fmt(ts: list[float]) -> str:
            return (
                f"best {min(ts):.2f} s, {mb / min(ts):.2f} MB/s (all: "
                + ", ".join(f"{t:.2f}" for t in ts)
                + ")"
            )

        print(
            f"corpus: {len(texts):,} documents in {args.files} files, {mb:.1f} MB of JSONL, "
            f"{n_tokens:,} tokens"
        )
        print(f"encode_batch_fast (texts in memory): {fmt(fast)}")
        print(f"encode_batch      (texts in memory): {fmt(slow)}")
        print(f"tokenloom build (workers={args.workers}): {fmt(ours)}")
        print(
            f"ratio build / encode_batch_fast rate: {min(fast) / min(ours):.2f}; "
            f"/ encode_batch rate: {min(slow) / min(ours):.2f}"
        )
        print(
            f"CPU seconds, least of the rounds: encode_batch_fast {min(cpu_fast):.2f}, build "
            f"{min(cpu_ours):.2f} (ratio {min(cpu_fast) / min(cpu_ours):.2f})"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
