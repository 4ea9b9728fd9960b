"""Cost of online batch selection: the Rust rule step and the torch utility paths.

    python benches/select_bench.py [--device cpu|cuda] [--skip-utility] [--hidden]

Measures (median of repeats, nothing asserted):
  * ``BatchSelector.select_from`` for 64 candidates, 1,024-float sketches, a full 1,024-row
    memory (the rule step the trainer pays per candidate batch), median and fastest step
    (on a shared machine the fastest is the one no other job slowed), beside two references
    on the same threads (``RAYON_NUM_THREADS``, else every core): the step's 64 x 1,024 x
    1,024 product alone in torch's BLAS, and the floor that product sets at the best rate per
    core measured here (torch's single-thread 1,024^3 product, near the FMA peak);
  * ``nuclear_norm`` of ``[B, 512, 32000]`` logits by ``svdvals`` and by the Gram path, and
    the FastJL sketch of the same logits;
  * with ``--hidden``: the selection cost beyond the scoring forward (utility, sketch and rule
    step for 8 candidates of 512 tokens, keeping 1) from the final hidden states, against the
    logits path and against the training step on the kept row, for SmolLM2-135M (a measured
    LoRA step; needs ``make bench-sft``'s packages) and for a 7B-shaped head (d 4,096,
    V 152,064, synthetic hidden states; the step is estimated as ``4 * 7.6e9 * 512`` FLOP of a
    LoRA step at the float32 product rate measured on the same threads). The head's factor
    (once per head weight, so once per run under LoRA) is reported apart.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import tokenloom as tl
import torch

if TYPE_CHECKING:
    from collections.abc import Callable


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def rule_steps(threads: int) -> None:
    """The Rust rule step against the product's BLAS time and floor."""
    rng = np.random.default_rng(0)
    sel = tl.BatchSelector(keep=16, buffer_size=1024, sketch=(8, 128))
    for _ in range(64):  # fill the memory
        sel.select_from(rng.random(64, np.float32), rng.random((64, 1024), np.float32))
    u, z = rng.random(64, np.float32), rng.random((64, 1024), np.float32)
    for rule in ("uds", "uds-greedy"):
        s = tl.BatchSelector(keep=16, buffer_size=1024, sketch=(8, 128), rule=rule)
        s.load_state_dict({**sel.state_dict(), "rule": rule})
        times = repeat(lambda s=s: s.select_from(u, z), 400)
        print(
            f"rule step ({rule}), 64 candidates x 1024 floats, memory 1024, {threads} threads: "
            f"median {statistics.median(times) * 1e3:.3f} ms, fastest {min(times) * 1e3:.3f} ms"
        )
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    big = torch.randn(1024, 1024)
    per_core = 1024**3 / min(repeat(lambda: big @ big, 50))
    torch.set_num_threads(threads)
    a, b = torch.from_numpy(z), torch.randn(1024, 1024)
    blas = min(repeat(lambda: a @ b.T, 400))
    torch.set_num_threads(before)
    fmas = 64 * 1024 * 1024
    print(
        f"  the 64 x 1024 x 1024 product alone in torch's BLAS, {threads} threads: fastest "
        f"{blas * 1e3:.3f} ms; floor at {per_core / 1e9:.0f} G multiply-adds/s per core "
        f"(torch, 1 thread, 1024^3): {fmas / per_core / threads * 1e3:.3f} ms"
    )


def repeat(fn: Callable[[], object], n: int) -> list[float]:
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def selection_cost(sel: tl.BatchSelector, h: torch.Tensor, w: torch.Tensor, sync: Any) -> float:
    def step() -> None:
        sel.select_from(*sel.scores_hidden(h, w))

    return timed(step, 3, sync)


def hidden_overhead(dev: torch.device, sync: Any) -> None:
    """Selection from hidden states as a fraction of a training step (see the module doc)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import smollm2
    from peft import LoraConfig, get_peft_model

    b, n = 8, 512
    model, _ = smollm2.load(Path("bench-out/sft"))
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets)).to(dev)
    body, w = model.get_base_model().model, model.get_output_embeddings().weight
    ids = torch.randint(100, w.shape[0], (b, n), device=dev)
    with torch.no_grad():
        t = time.perf_counter()
        h = body(input_ids=ids).last_hidden_state
        sync()
        forward = time.perf_counter() - t
    sel = tl.BatchSelector(keep=1, max_len=n)
    t = time.perf_counter()
    sel.scores_hidden(h[:1], w)  # the factor, once per head weight
    sync()
    factor = time.perf_counter() - t
    hidden = selection_cost(sel, h, w, sync)
    with torch.no_grad():
        logits = h @ w.T  # part of the scoring forward on this path, not timed

    def logits_step() -> None:
        sel.select_from(*sel.scores(logits))

    on_logits = timed(logits_step, 2, sync)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def train_step() -> None:
        out = model(input_ids=ids[:1], labels=ids[:1])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    train = timed(train_step, 2, sync)
    print(
        f"SmolLM2-135M + LoRA, {b} candidates x {n} tokens, keep 1, on {dev}: training step on "
        f"the kept row {train * 1e3:.0f} ms; scoring forward (body only) {forward * 1e3:.0f} ms;"
        f"\n  selection beyond the forward: hidden path {hidden * 1e3:.1f} ms "
        f"({hidden / train:.1%} of the step), logits path {on_logits * 1e3:.0f} ms "
        f"({on_logits / train:.1%}); head factor once per head weight {factor * 1e3:.0f} ms"
    )
    d, v, params = 4096, 152_064, 7.6e9
    w = torch.randn(v, d, device=dev) * 0.02
    h = torch.randn(b, n, d, device=dev)
    sel = tl.BatchSelector(keep=1, max_len=n)
    t = time.perf_counter()
    sel.scores_hidden(h[:1], w)
    sync()
    factor = time.perf_counter() - t
    hidden = selection_cost(sel, h, w, sync)
    a = torch.randn(2048, 2048, device=dev)
    rate = 2 * 2048**3 / timed(lambda: a @ a, 5, sync)
    train = 4 * params * n / rate
    print(
        f"7B-shaped head (d {d}, V {v:,}), {b} candidates x {n} tokens, keep 1, on {dev}: "
        f"selection beyond the forward {hidden * 1e3:.0f} ms = {hidden / train:.2%} of a LoRA "
        f"step estimated at {train:.0f} s (4 x {params:.1e} x {n} FLOP at the measured "
        f"{rate / 1e9:.0f} GFLOP/s float32); head factor once per head weight {factor:.1f} s"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=1, help="samples of [512, 32000] logits")
    ap.add_argument("--skip-utility", action="store_true", help="only the Rust rule step")
    ap.add_argument("--hidden", action="store_true", help="only the hidden-state overhead")
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    if args.hidden:
        hidden_overhead(dev, sync)
        return 0
    rule_steps(int(os.environ.get("RAYON_NUM_THREADS", "0")) or os.cpu_count() or 1)
    if args.skip_utility:
        return 0

    x = torch.randn(args.batch, 512, 32000, device=dev)
    svd = timed(lambda: tl.nuclear_norm(x, method="svd"), 3, sync)
    gram = timed(lambda: tl.nuclear_norm(x, method="gram"), 3, sync)
    sketch = tl.FastJL(512, 32000, 8, 128)
    sk = timed(lambda: sketch(x), 3, sync)
    print(
        f"nuclear norm of {args.batch} x [512, 32000] on {dev}: svdvals {svd * 1e3:.0f} ms, "
        f"Gram {gram * 1e3:.0f} ms ({svd / gram:.1f}x faster); FastJL sketch {sk * 1e3:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
