"""UDS against random selection at the same kept-sample budget: a small causal LM trained from
scratch on a real offline corpus (Python's standard library, examples/stdlib_corpus.py).

    python benches/uds_experiment.py --steps 200 --seeds 3 --threads 1 [--rules uds,random]

For every seed, each rule sees the same candidate stream (``TokenDataset(seed=seed)``) and the
same initial model, keeps ``--keep`` rows of each candidate batch of ``--candidates`` and trains
on them (AdamW, warmup then cosine). The validation loss on held-out files is measured every
``--eval-every`` steps. Writes ``curves.png``, ``results.md`` and ``results.json`` under
``--out``, whatever the outcome; also the selection overhead per step: the time in
``nuclear_norm`` + sketch + ``select_from`` (and in the scoring forward) against the training
step (forward, backward and optimizer on the kept rows). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import tokenloom as tl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from stdlib_corpus import prepare
from tiny_gpt import GPTConfig, TinyGPT, cosine_lr, val_loss

PHASES = ("score_forward", "nuclear_norm", "sketch", "select_from", "train_step")


def run(args: argparse.Namespace, rule: str, seed: int, data: dict[str, Any]) -> dict[str, Any]:
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(seed)
    cfg = GPTConfig(data["vocab"], args.seq_len, d_model=args.d_model, n_layer=args.layers)
    model = TinyGPT(cfg).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    ds = tl.TokenDataset(data["train"], seq_len=args.seq_len, batch_size=args.candidates, seed=seed)
    sel = tl.BatchSelector(args.keep, alpha=args.alpha, rule=rule, seed=seed, max_len=args.seq_len)
    sketch = tl.FastJL(args.seq_len, data["vocab"], 8, 128, seed=seed)  # = the selector's
    times: dict[str, list[float]] = {p: [] for p in PHASES}
    curve = [(0, val_loss(model, data["val"], dev))]

    def clock(phase: str, t0: float) -> float:
        sync()
        t = time.perf_counter()
        times[phase].append(t - t0)
        return t

    step = 0
    while step < args.steps:
        for cand in ds:
            cand = tl.to_device(cand, dev)
            t = time.perf_counter()
            if rule == "random":  # needs no scores
                kept = torch.from_numpy(sel.select_from(torch.zeros(args.candidates)))
            else:
                with torch.no_grad():
                    logits = model(cand["input_ids"])
                    t = clock("score_forward", t)
                    u = tl.nuclear_norm(logits)
                    t = clock("nuclear_norm", t)
                    z = sketch(logits)
                    t = clock("sketch", t)
                kept = torch.from_numpy(sel.select_from(u, z))
                t = clock("select_from", t)
            batch = tl.take_rows(cand, kept.to(dev))
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, args.steps, args.lr, args.warmup)
            t = time.perf_counter()
            loss = model.loss(batch["input_ids"], batch["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            clock("train_step", t)
            step += 1
            if step % args.eval_every == 0 or step == args.steps:
                curve.append((step, val_loss(model, data["val"], dev)))
                print(
                    f"  {rule:>10} seed {seed} step {step:4d}: train {loss.item():.3f} "
                    f"val {curve[-1][1]:.3f}",
                    flush=True,
                )
            if step == args.steps:
                break
    return {
        "rule": rule,
        "seed": seed,
        "curve": curve,
        "times_ms": {p: 1e3 * statistics.median(v) for p, v in times.items() if v},
    }


def table(args: argparse.Namespace, runs: list[dict[str, Any]]) -> str:
    rules, seeds = args.rules, list(range(args.seeds))
    final = {(r["rule"], r["seed"]): r["curve"][-1][1] for r in runs}
    lines = [
        f"Final validation loss after {args.steps} steps, keeping {args.keep} of "
        f"{args.candidates} candidates (seq_len {args.seq_len}, d_model {args.d_model}, "
        f"{args.layers} layers):",
        "",
        "| rule | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | sd |",
        "|---" * (len(seeds) + 3) + "|",
    ]
    for rule in rules:
        vals = [final[(rule, s)] for s in seeds]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        cells = " | ".join(f"{v:.4f}" for v in vals)
        lines.append(f"| {rule} | {cells} | {statistics.mean(vals):.4f} | {sd:.4f} |")
    if "random" in rules:
        for rule in (r for r in rules if r != "random"):
            diffs = [final[(rule, s)] - final[("random", s)] for s in seeds]
            wins = sum(d < 0 for d in diffs)
            lines.append(
                f"\n{rule} - random, per seed: {', '.join(f'{d:+.4f}' for d in diffs)} "
                f"(mean {statistics.mean(diffs):+.4f}; lower on {wins} of {len(seeds)} seeds)"
            )
    lines += ["", "Median time per step (ms) and selection overhead:", ""]
    lines += ["| rule | " + " | ".join(PHASES) + " | overhead | with scoring forward |"]
    lines += ["|---" * (len(PHASES) + 3) + "|"]
    for rule in rules:
        per = [r["times_ms"] for r in runs if r["rule"] == rule]
        med = {p: statistics.mean(t[p] for t in per) for p in PHASES if p in per[0]}
        sel = sum(med.get(p, 0.0) for p in ("nuclear_norm", "sketch", "select_from"))
        train = med["train_step"]
        cells = " | ".join(f"{med[p]:.2f}" if p in med else "-" for p in PHASES)
        lines.append(
            f"| {rule} | {cells} | {sel / train:.1%} | "
            f"{(sel + med.get('score_forward', 0.0)) / train:.1%} |"
        )
    return "\n".join(lines) + "\n"


def plot(args: argparse.Namespace, runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for rule in args.rules:
        curves = [r["curve"] for r in runs if r["rule"] == rule]
        steps = [s for s, _ in curves[0]]
        vals = [[v for _, v in c] for c in curves]
        mean = [statistics.mean(col) for col in zip(*vals, strict=True)]
        lo = [min(col) for col in zip(*vals, strict=True)]
        hi = [max(col) for col in zip(*vals, strict=True)]
        (line,) = ax.plot(steps, mean, label=f"{rule} (mean of {len(curves)} seeds)")
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("validation loss")
    ax.set_title(f"keep {args.keep} of {args.candidates} candidates per step")
    ax.legend()
    ax.grid(alpha=0.3)
    tail = [v for r in runs for s, v in r["curve"] if s >= args.steps // 4]
    if tail:
        ax.set_ylim(min(tail) - 0.05, max(tail) + 0.1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="demo-out/stdlib-bpe", help="corpus directory")
    ap.add_argument("--out", default="bench-out/uds")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rules", default="uds,random", help="comma-separated selector rules")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--candidates", type=int, default=32)
    ap.add_argument("--keep", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=2.5e-3)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--eval-batches", type=int, default=8, help="validation batches of 64 rows")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    args.rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    train, val, vocab = prepare(args.data)
    val_ds = tl.TokenDataset(val, seq_len=args.seq_len, batch_size=64, shuffle=False)
    val_batches = [b for b, _ in zip(val_ds, range(args.eval_batches), strict=False)]
    data = {"train": train, "val": val_batches, "vocab": vocab}
    start = time.perf_counter()
    runs = [run(args, rule, seed, data) for seed in range(args.seeds) for rule in args.rules]
    wall = time.perf_counter() - start

    md = table(args, runs)
    md += f"\nWall time {wall:.0f} s on {args.device} with {args.threads} thread(s).\n"
    (out / "results.md").write_text(md)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    plot(args, runs, out / "curves.png")
    print()
    print(md)
    print(f"wrote {out / 'curves.png'}, {out / 'results.md'}, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
