"""Cost of online batch selection: the Rust rule step and the torch utility paths.

    python benches/select_bench.py [--device cpu|cuda] [--skip-utility]

Measures (median of repeats, nothing asserted):
  * ``UDSSelector.select_from`` for 64 candidates, 1,024-float sketches, a full 1,024-row
    memory (the rule step the trainer pays per candidate batch), median and fastest step
    (on a shared machine the fastest is the one no other job slowed), beside two references
    on the same threads (``RAYON_NUM_THREADS``, else every core): the step's 64 x 1,024 x
    1,024 product alone in torch's BLAS, and the floor that product sets at the best rate per
    core measured here (torch's single-thread 1,024^3 product, near the FMA peak);
  * ``nuclear_norm`` of ``[B, 512, 32000]`` logits by ``svdvals`` and by the Gram path, and
    the FastJL sketch of the same logits.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import TYPE_CHECKING

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
    sel = tl.UDSSelector(keep=16, buffer_size=1024, sketch=(8, 128))
    for _ in range(64):  # fill the memory
        sel.select_from(rng.random(64, np.float32), rng.random((64, 1024), np.float32))
    u, z = rng.random(64, np.float32), rng.random((64, 1024), np.float32)
    for rule in ("uds", "uds-greedy"):
        s = tl.UDSSelector(keep=16, buffer_size=1024, sketch=(8, 128), rule=rule)
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=1, help="samples of [512, 32000] logits")
    ap.add_argument("--skip-utility", action="store_true", help="only the Rust rule step")
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

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
