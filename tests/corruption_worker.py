"""Worker of the corruption sweep (``test_corruption_sweep.py``): damages one file of a dataset
per case, reads everything back, and reports how each case ended, one line per case.

Run as ``python corruption_worker.py PRISTINE WORK SEED FIRST COUNT [hostile]``. ``PRISTINE``
holds the undamaged dataset (``ds/``, with its plan cache) and its order file (``ds.order``);
``WORK`` is a copy that the worker damages and restores. Case ``i`` is drawn from ``(SEED, i)``
alone, so a run can start at any case. Before case ``i`` the worker prints ``begin i``; after
it ``end i OUTCOME [DETAIL]``, where ``OUTCOME`` is ``same`` (everything read equals the
undamaged data), ``typed`` (a typed error; ``DETAIL`` is its class) or ``wrong`` (anything
else: other data accepted by ``verify``, an untyped error, an internal error). A crash or a
hang shows as a ``begin`` without its ``end``.

With ``hostile``, each case is one of the hostile classes of ``hostile.py`` instead of byte
damage: a special file (FIFO, ``/dev/zero``, a directory, a dangling or looping symbolic
link) or a symbolic link to another of the dataset's files in place of a file; a token file
truncated by another thread while the loader and ``verify`` read it; or two writers
rewriting the dataset at once (each commits or is refused with ``LockedError``).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

sys.modules["torch"] = None  # type: ignore[assignment]  # numpy output, fast start

import hostile  # noqa: E402
import numpy as np  # noqa: E402
import tokenloom as tl  # noqa: E402

# Errors a user can catch and act on. Internal errors (a panic caught at the boundary) are
# TokenloomError too, and are told apart by their message.
TYPED = (tl.TokenloomError, ValueError, OSError)


def files_of(root: Path) -> list[str]:
    """Every file of the dataset and its order file, relative to ``root`` (not the large
    dataset ``big/``, which only the truncation-while-reading class uses)."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0] != "big"
    )


def read_big(work: Path, how: str) -> str:
    """The large dataset read one way that copies: every batch through the loader, or
    ``verify``."""
    if how == "verify":
        tl.open_dataset(work / "big").verify(progress=False)
        return "verified"
    h = hashlib.sha256()
    for b in tl.TokenDataset(
        work / "big", seq_len=1024, batch_size=8, output="numpy", seed=1, threads=1, outputs=()
    ):
        h.update(b["input_ids"].tobytes())
    return h.hexdigest()


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
        got = outcome_of(work, want)
    finally:
        restore(pristine, work, name)
    return f"{got} ({name} {kind})" if got.startswith("wrong") else got


def outcome_of(work: Path, want: str) -> str:
    try:
        got = read_everything(work)
    except TYPED as e:
        if "internal error" in str(e):
            return f"wrong: {e}"
        return f"typed {type(e).__name__}"
    except Exception as e:
        return f"wrong: untyped {type(e).__name__}: {e}"
    return "same" if got == want else "wrong: other data passed verify"


def hostile_case(
    pristine: Path, work: Path, names: list[str], seed: int, i: int, wants: dict[object, object]
) -> str:
    rng = np.random.default_rng([seed, i, 1])
    kinds = ["special", "symlink", "truncate-while-reading", "two-writers"]
    # HOSTILE_KINDS=a,b restricts the draw (e.g. to measure one class against another build).
    kinds = os.environ.get("HOSTILE_KINDS", ",".join(kinds)).split(",")
    kind = str(rng.choice(kinds))
    if kind == "special":
        name = names[int(rng.integers(0, len(names)))]
        special = str(rng.choice(hostile.SPECIAL_KINDS))
        hostile.plant_special(work / name, special)
        try:
            got = outcome_of(work, str(wants[True]))
        finally:
            hostile.remove_planted(work / name)
            restore(pristine, work, name)
        return f"{got} special {special} at {name}" if got.startswith("wrong") else got
    if kind == "symlink":
        name, other = (names[int(k)] for k in rng.integers(0, len(names), size=2))
        (work / name).unlink()
        (work / name).symlink_to((pristine if name == other else work) / other)
        try:
            got = outcome_of(work, str(wants[True]))
        finally:
            (work / name).unlink()
            restore(pristine, work, name)
        return f"{got} symlink {name} -> {other}" if got.startswith("wrong") else got
    if kind == "truncate-while-reading":
        bins = sorted(str(p.relative_to(pristine)) for p in (pristine / "big").glob("*.bin"))
        name = bins[int(rng.integers(0, len(bins)))]
        size = (pristine / name).stat().st_size
        cut = int(rng.integers(0, size))
        how = str(rng.choice(["loader", "verify"]))
        # The cut lands at a random moment of the read (timed once, undamaged).
        delay = float(rng.uniform(0, wants[how, "seconds"]))  # type: ignore[arg-type]

        def truncate() -> None:
            time.sleep(delay)
            os.truncate(work / name, cut)

        t = threading.Thread(target=truncate)
        t.start()
        try:
            got = "same" if read_big(work, how) == wants[how] else f"wrong: other data ({how})"
        except TYPED as e:
            got = f"typed {type(e).__name__}"
        finally:
            t.join()
            restore(pristine, work, name)
        return f"{got} truncated {name} to {cut}" if got.startswith("wrong") else f"{got} {how}"
    # two writers rewrite the dataset with its own documents at once
    src = tl.open_dataset(pristine / "ds")
    docs = [src[j].copy() for j in range(len(src))]
    del src
    results: list[str] = []

    def write() -> None:
        try:
            with tl.DatasetWriter(
                work / "ds", "u16", eos_id=0, vocab_size=1000, shard_bytes=300, overwrite=True
            ) as w:
                for d in docs:
                    w.add(d)
                    time.sleep(float(rng.uniform(0, 0.0002)))
            results.append("committed")
        except tl.LockedError:
            results.append("locked")

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        got = outcome_of(work, str(wants[True]))
    finally:
        for name in names:
            restore(pristine, work, name)
        for p in (work / "ds").glob("part-*"):
            if p.name not in {Path(n).name for n in names}:
                p.unlink()
    if "committed" not in results:
        return f"wrong: no writer committed ({results})"
    return f"{got} ({'+'.join(sorted(results))})" if got.startswith("wrong") else got


def main() -> None:
    pristine, work = Path(sys.argv[1]), Path(sys.argv[2])
    seed, first, count = (int(a) for a in sys.argv[3:6])
    hostile_mode = sys.argv[6:7] == ["hostile"]
    # A damaged size must not make the process allocate the machine away.
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    names = files_of(pristine)
    for name in names:
        restore(pristine, work, name)
    want = read_everything(work)
    wants: dict[object, object] = {True: want}
    if hostile_mode:
        shutil.copytree(pristine / "big", work / "big", dirs_exist_ok=True)
        for how in ("loader", "verify"):
            t0 = time.perf_counter()
            wants[how] = read_big(work, how)
            wants[how, "seconds"] = time.perf_counter() - t0
    for i in range(first, first + count):
        print(f"begin {i}", flush=True)
        if hostile_mode:
            outcome = hostile_case(pristine, work, names, seed, i, wants)
        else:
            outcome = run_case(pristine, work, names, seed, i, want)
        print(f"end {i} {outcome}", flush=True)
    print(json.dumps({"files": names}), flush=True)


if __name__ == "__main__":
    main()
