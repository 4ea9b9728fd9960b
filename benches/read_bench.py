"""The cost of reading tokens with positioned reads (``pread``) instead of copying them from
the memory map, side by side with a build that copies from the map.

    python benches/read_bench.py --baseline /path/to/other/venv/bin/python [--tokens 5e7]

``--baseline`` is a Python interpreter with another build of tokenloom (the one before the
change: copies from the map). Both interpreters run the same measurements on the same
page-cached dataset, alternately (A B A B ...), ``--repeats`` times; the script prints each
measurement's median throughput for both and the ratio (this build / baseline) with a 95 %
paired-bootstrap interval. What is measured:

  * loader, concat: ``TokenDataset(seq_len=2048, batch_size=8, threads=1)`` batches (one long
    piece per row);
  * loader, pack: the same in ``mode="pack"`` (several documents per row: more reads);
  * verify: ``Dataset.verify()`` (hash of every byte);
  * convert: ``tokenloom convert`` to a new tokenloom dataset (document by document).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# Runs one round of every measurement in the interpreter it is given; prints JSON.
ROUND = r"""
import json, os, sys, time, shutil
sys.modules["torch"] = None
import tokenloom as tl
from tokenloom import _core
ds_path, scratch = sys.argv[1], sys.argv[2]
out = {}
def loader(mode):
    t0 = time.perf_counter()
    n = 0
    for b in tl.TokenDataset(ds_path, seq_len=2048, batch_size=8, mode=mode, seed=0,
                             output="numpy", threads=1, outputs=()):
        n += b["input_ids"].size
    return n / (time.perf_counter() - t0)
list(tl.TokenDataset(ds_path, seq_len=2048, batch_size=8, mode="pack", output="numpy"))
out["loader concat (tokens/s)"] = loader("concat")
out["loader pack (tokens/s)"] = loader("pack")
ds = tl.open_dataset(ds_path)
t0 = time.perf_counter()
ds.verify(progress=False)
out["verify (bytes/s)"] = ds.num_tokens * 2 / (time.perf_counter() - t0)
dst = os.path.join(scratch, "converted")
shutil.rmtree(dst, ignore_errors=True)
t0 = time.perf_counter()
rc = _core.run_cli(["tokenloom", "-q", "convert", ds_path, dst, "--to", "tokenloom"])
assert rc == 0
out["convert (bytes/s)"] = ds.num_tokens * 2 / (time.perf_counter() - t0)
shutil.rmtree(dst)
print(json.dumps(out))
"""


def make_dataset(path: Path, n: int, seed: int = 0) -> None:
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]
    import tokenloom as tl

    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 50000, size=n, dtype=np.uint16)
    lengths = rng.geometric(1 / 600, size=n // 300).astype(np.uint64)
    lengths = lengths[np.cumsum(lengths) <= n]
    lengths[-1] += n - int(lengths.sum())
    with tl.DatasetWriter(path, "u16", eos_id=0, vocab_size=50000) as w:
        w.add_many_flat(tokens, lengths)


def paired_ci(
    a: np.ndarray, b: np.ndarray, rng: np.random.Generator, reps: int = 10_000
) -> tuple[float, float, float]:
    """Ratio of medians a/b and its 95 % interval, resampling the pairs."""
    idx = rng.integers(0, len(a), size=(reps, len(a)))
    ratios = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(np.median(a) / np.median(b)), float(lo), float(hi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, help="python of the build to compare with")
    ap.add_argument("--tokens", type=float, default=5e7)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = ap.parse_args()
    scratch = args.out or Path(tempfile.mkdtemp(prefix="read_bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    ds = scratch / "ds"
    if not (ds / "manifest.json").exists():
        make_dataset(ds, int(args.tokens))
    runs: dict[str, list[dict[str, float]]] = {"this": [], "baseline": []}
    for r in range(args.repeats):
        order = [("this", sys.executable), ("baseline", args.baseline)]
        if r % 2:
            order.reverse()
        for name, python in order:
            done = subprocess.run(
                [python, "-c", ROUND, str(ds), str(scratch)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    rng = np.random.default_rng(0)
    print(f"{args.tokens:.0e} tokens (u16), {args.repeats} paired rounds")
    print(f"{'measure':28s} {'this':>12s} {'baseline':>12s}  ratio [95% CI]")
    for key in runs["this"][0]:
        a = np.array([x[key] for x in runs["this"]])
        b = np.array([x[key] for x in runs["baseline"]])
        ratio, lo, hi = paired_ci(a, b, rng)
        print(
            f"{key:28s} {np.median(a):12.4g} {np.median(b):12.4g}  {ratio:.3f} [{lo:.3f}, {hi:.3f}]"
        )
    if args.out is None:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
