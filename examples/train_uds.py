"""Training a small GPT-style model with online batch selection (UDS), in plain PyTorch.

Each step reads a candidate batch, scores it with a forward pass without gradients, keeps a
quarter of its rows (``BatchSelector``), books the choice in the dataset (``record_selection``)
and trains on the kept rows. The corpus is Python's standard library (see stdlib_corpus.py):
nothing to download.

    python examples/train_uds.py [--steps 300] [--rule uds] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import tokenloom as tl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stdlib_corpus import prepare
from tiny_gpt import GPTConfig, TinyGPT


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="demo-out/stdlib-bpe", help="corpus directory")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--candidates", type=int, default=32, help="rows per candidate batch")
    ap.add_argument("--keep", type=float, default=0.25, help="fraction of rows kept")
    ap.add_argument("--rule", default="uds", choices=tl.select.RULES[:-1])
    ap.add_argument("--alpha", type=float, default=2.5e-3)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)

    train, _val, vocab = prepare(args.data)
    ds = tl.TokenDataset(train, seq_len=args.seq_len, batch_size=args.candidates, seed=args.seed)
    keep = max(1, round(args.keep * args.candidates))
    sel = tl.BatchSelector(
        keep, alpha=args.alpha, rule=args.rule, max_len=args.seq_len, seed=args.seed
    )
    model = TinyGPT(GPTConfig(vocab_size=vocab, seq_len=args.seq_len)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    print(
        f"{model.num_params() / 1e6:.2f} M parameters; candidate batches of {args.candidates} "
        f"x {args.seq_len} tokens, keeping {keep} by rule {args.rule!r}"
    )

    start, tokens, step = time.perf_counter(), 0, 0
    while step < args.steps:
        for cand in ds.candidates():
            cand = tl.to_device(cand, dev)
            with torch.no_grad():
                logits = model(cand["input_ids"])
            kept = sel.select(logits)
            ds.record_selection(cand, kept)
            batch = tl.take_rows(cand, kept)
            loss = model.loss(batch["input_ids"], batch["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            tokens += batch["input_ids"].numel()
            rate = ds.selection_stats()["keep_rate"]
            elapsed = time.perf_counter() - start
            print(
                f"\rstep {step:5d}  loss {loss.item():.3f}  {tokens / elapsed:8.0f} trained tok/s"
                f"  keep rate {rate:.1%}",
                end="",
                flush=True,
            )
            if step == args.steps:
                break
    print()
    stats = ds.selection_stats()
    print(f"offered {stats['seen']:,} samples, kept {stats['kept']:,} ({stats['keep_rate']:.1%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
