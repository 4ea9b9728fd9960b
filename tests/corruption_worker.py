"""Worker of the corruption sweep (``test_corruption_sweep.py``): damages one file of a dataset
per case, reads everything back, and reports how each case ended, one line per case.

Run as ``python corruption_worker.py PRISTINE WORK SEED FIRST COUNT``. ``PRISTINE`` holds the
undamaged dataset (``ds/``, with its plan cache) and its order file (``ds.order``); ``WORK`` is
a copy that the worker damages and restores. Case ``i`` is drawn from ``(SEED, i)`` alone, so a
run can start at any case. Before case ``i`` the worker prints ``begin i``; after it
``end i OUTCOME [DETAIL]``, where ``OUTCOME`` is ``same`` (everything read equals the
undamaged data), ``typed`` (a typed error; ``DETAIL`` is its class) or ``wrong`` (anything
else: other data accepted by ``verify``, an untyped error, an internal error). A crash or a
hang shows as a ``begin`` without its ``end``.
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import sys
from pathlib import Path

sys.modules["torch"] = None  # type: ignore[assignment]  # numpy output, fast start

import numpy as np  # noqa: E402
import tokenloom as tl  # noqa: E402

# Errors a user can catch and act on. Internal errors (a panic caught at the boundary) are
# TokenloomError too, and are told apart by their message.
TYPED = (tl.TokenloomError, ValueError, OSError)


def files_of(root: Path) -> list[str]:
    """Every file of the dataset and its order file, relative to ``root``."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """Byte flips, a truncation, or both."""
    kind = rng.choice(["flip", "truncate", "flip+truncate"], p=[0.6, 0.3, 0.1])
    out = bytearray(data)
    if "flip" in kind and out:
        for _ in range(int(rng.integers(1, 5))):
            at = int(rng.integers(0, len(out)))
            out[at] ^= int(rng.integers(1, 256))
    if "truncate" in kind:
        out = out[: int(rng.integers(0, len(out) + 1))]
    return bytes(out), str(kind)


def read_everything(work: Path) -> str:
    """Opens, reads every document, two loader epochs (concat and ordered), verifies."""
    ds_path, order = work / "ds", work / "ds.order"
    h = hashlib.sha256()
    ds = tl.open_dataset(ds_path)
    for i in range(len(ds)):
        h.update(ds[i].tobytes())
    h.update(ds.doc_lengths().tobytes())
    for mode in ("concat", "ordered"):
        loader = tl.TokenDataset(
            ds_path,
            seq_len=16,
            batch_size=4,
            mode=mode,
            order=order if mode == "ordered" else None,
            output="numpy",
            seed=1,
            threads=1,
        )
        for b in loader:
            for k in sorted(b):
                h.update(np.ascontiguousarray(b[k]).tobytes())
    ds.verify(check_vocab=True, progress=False)
    return h.hexdigest()


def restore(pristine: Path, work: Path, name: str) -> None:
    shutil.copyfile(pristine / name, work / name)
    plans = work / "ds" / ".plans"  # plans rebuilt from damaged data would linger: reset
    if plans.exists():
        shutil.rmtree(plans)
    shutil.copytree(pristine / "ds" / ".plans", plans)


def run_case(pristine: Path, work: Path, names: list[str], seed: int, i: int, want: str) -> str:
    rng = np.random.default_rng([seed, i])
    name = names[int(rng.integers(0, len(names)))]
    data, kind = mutate((pristine / name).read_bytes(), rng)
    (work / name).write_bytes(data)
    try:
        got = read_everything(work)
    except TYPED as e:
        if "internal error" in str(e):
            return f"wrong {name} {kind}: {e}"
        return f"typed {type(e).__name__}"
    except Exception as e:
        return f"wrong {name} {kind}: untyped {type(e).__name__}: {e}"
    finally:
        restore(pristine, work, name)
    return "same" if got == want else f"wrong {name} {kind}: other data passed verify"


def main() -> None:
    pristine, work = Path(sys.argv[1]), Path(sys.argv[2])
    seed, first, count = (int(a) for a in sys.argv[3:6])
    # A damaged size must not make the process allocate the machine away.
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    names = files_of(pristine)
    for name in names:
        restore(pristine, work, name)
    want = read_everything(work)
    for i in range(first, first + count):
        print(f"begin {i}", flush=True)
        print(f"end {i} {run_case(pristine, work, names, seed, i, want)}", flush=True)
    print(json.dumps({"files": names}), flush=True)


if __name__ == "__main__":
    main()
