"""The main job, on a small real corpus that needs no download: the source files of
Python's own standard library. Tokenizes them at the byte level (UTF-8 bytes 0..255,
end-of-document 256), writes a tokenloom dataset, verifies it, prints its summary and
reads one epoch of packed training batches.

Run with ``make demo`` (sets everything up), or ``python examples/quickstart.py [OUT]``.
"""

from __future__ import annotations

import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import tokenloom as tl

EOS = 256
VOCAB = 257


def corpus() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)
    if not files:
        raise SystemExit(f"no Python sources found under {stdlib}")
    return files


def encode(text: bytes) -> np.ndarray:
    doc = np.empty(len(text) + 1, dtype=np.uint16)
    doc[:-1] = np.frombuffer(text, dtype=np.uint8)
    doc[-1] = EOS
    return doc


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-out/stdlib")
    files = corpus()
    print(f"corpus: {len(files)} Python source files from {sysconfig.get_paths()['stdlib']}")
    t0 = time.perf_counter()
    nbytes = 0
    with tl.DatasetWriter(
        out,
        "u16",
        eos_id=EOS,
        vocab_size=VOCAB,
        tokenizer="bytes-utf8+eos256",
        shard_bytes=16 << 20,
        overwrite=True,
    ) as w:
        for path in files:
            text = path.read_bytes()
            nbytes += len(text)
            w.add(encode(text))
    dt = time.perf_counter() - t0
    print(
        f"wrote {out} in {dt:.2f}s ({nbytes / dt / 1e6:.0f} MB/s of text, reading files included)"
    )

    ds = tl.open_dataset(out)
    report = ds.verify(check_vocab=True, progress=False)
    print(f"verified {report['shards']} shards, {report['tokens']} tokens: all checksums match")
    doc = ds[len(ds) // 2]
    head = bytes(doc[:60].astype(np.uint8)).decode("utf-8", "replace").splitlines()[0]
    print(f"document {len(ds) // 2} starts with: {head!r}")
    print()
    print(ds.summary()["text"], end="")
    print()

    # Training batches: whole files packed into rows of 1,024 bytes, shuffled.
    loader = tl.TokenDataset(
        out, seq_len=1024, batch_size=8, mode="pack", seed=0, ignore_index=-100, output="numpy"
    )
    t0 = time.perf_counter()
    n, last = 0, None
    for batch in loader:
        n, last = n + 1, batch
    assert last is not None
    dt = time.perf_counter() - t0
    print(
        f"one epoch of packed [8, 1024] batches: {n} batches in {dt:.2f}s "
        f"({n * 8 * 1024 / dt / 1e6:.0f} M tokens/s); "
        f"padding {np.mean(last['doc_ids'] < 0):.1%} of the last batch"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
