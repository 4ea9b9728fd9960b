"""Build throughput against the tokenizer's own ``encode_batch`` rate on the same texts.

The corpus is the ``.py`` files of Python's standard library (nothing is downloaded), written
as one ``.jsonl`` file; a byte-level BPE is trained on part of it with ``tokenizers``. Both
sides tokenize the same texts in batches of 1,000: the baseline only calls ``encode_batch``
on texts already in memory, the build also reads and parses the JSON, appends the EOS, writes
and fsyncs the shards and the provenance, and merges.

    python benches/build_bench.py [--workers 1] [--repeat 4]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sysconfig
import tempfile
import time
from pathlib import Path

import tokenloom as tl
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=4, help="copies of the stdlib in the corpus")
    args = ap.parse_args()
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    raw = [p.read_bytes() for p in files]
    texts = [b.decode("utf-8", errors="replace") for b in raw if b.strip()] * args.repeat
    tmp = Path(tempfile.mkdtemp(prefix="tl-build-bench-"))
    try:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=8192,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts[:300], trainer)
        tok_path = tmp / "tokenizer.json"
        tok.save(str(tok_path))
        corpus = tmp / "corpus.jsonl"
        with corpus.open("w", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps({"text": t}) + "\n")
        mb = corpus.stat().st_size / 1e6

        t0 = time.perf_counter()
        n_tokens = 0
        for i in range(0, len(texts), 1000):
            encs = tok.encode_batch(texts[i : i + 1000], add_special_tokens=False)
            n_tokens += sum(len(e.ids) for e in encs)
        base = time.perf_counter() - t0

        t0 = time.perf_counter()
        r = tl.build([corpus], tmp / "out", tok_path, workers=args.workers, quiet=True)
        ours = time.perf_counter() - t0
        assert r.num_tokens == n_tokens + r.num_docs, (r.num_tokens, n_tokens, r.num_docs)

        print(f"corpus: {len(texts):,} documents, {mb:.1f} MB of JSONL, {n_tokens:,} tokens")
        print(f"encode_batch (texts in memory): {base:.2f} s, {mb / base:.1f} MB/s")
        print(
            f"tokenloom build (workers={args.workers}): {ours:.2f} s, {mb / ours:.1f} MB/s, "
            f"{r.num_tokens / ours / 1e6:.2f} M tokens/s"
        )
        print(f"ratio build / encode_batch rate: {base / ours:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
