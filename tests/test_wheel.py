"""The wheel: built by maturin (reusing the release build of ``make develop``), installed with
numpy alone into a fresh virtual environment, without the dev extras, and used there."""

from __future__ import annotations

import email
import json
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tokenloom as tl

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUICK_START = "<!-- library quick start: tests/test_wheel.py runs this block in a clean venv -->"


def readme_quick_start() -> str:
    """The README's library quick start, as printed."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    at = lines.index(QUICK_START)
    assert lines[at + 1] == "```python"
    return "\n".join(lines[at + 2 : lines.index("```", at + 2)])


# Runs in the clean environment: everything a user without extras does first.
USE = """
import importlib.util, json, sys
import numpy as np
import tokenloom as tl

path = sys.argv[1]
with tl.DatasetWriter(path, dtype="u16", eos_id=0, vocab_size=100) as w:
    for doc in ([1, 2, 3], [4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14]):
        w.add(np.asarray(doc, dtype=np.uint16))
ds = tl.open_dataset(path)
batches = tl.TokenDataset(path, seq_len=4, batch_size=2, shuffle=False, output="numpy")
print(json.dumps({
    "package": tl.__file__,
    "extension": tl._core.__file__,
    "version": tl.__version__,
    "docs": [ds[i].tolist() for i in range(len(ds))],
    "verify": ds.verify(progress=False),
    "batches": [{k: b[k].tolist() for k in ("input_ids", "labels")} for b in batches],
    "extras_found": [m for m in ("torch", "tqdm", "tokenizers", "zstandard", "pyarrow")
                     if importlib.util.find_spec(m)],
}))
"""


def _run(cmd: list[str | Path], cwd: Path, timeout: int) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{cmd[:3]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([BIN / "maturin", "build", "--release", "--out", out], ROOT, timeout=1800)
    (whl,) = out.glob("*.whl")
    return whl


@pytest.fixture(scope="module")
def clean_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment holding the wheel and numpy (this one's version, so pip's
    cache serves it), nothing else."""
    env = tmp_path_factory.mktemp("env")
    venv.EnvBuilder(with_pip=False).create(env)
    pip = [sys.executable, "-m", "pip", "--python", env / "bin" / "python", "install"]
    _run([*pip, "-q", "--no-deps", wheel, f"numpy=={np.__version__}"], env, timeout=600)
    return env


def test_wheel_is_one_abi3_wheel_per_platform(wheel: Path) -> None:
    # The stable-ABI tag: one wheel serves CPython 3.10 and every later version.
    assert re.fullmatch(rf"tokenloom-{re.escape(tl.__version__)}-cp310-abi3-\w+\.whl", wheel.name)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = email.message_from_bytes(z.read(f"tokenloom-{tl.__version__}.dist-info/METADATA"))
        entry_points = z.read(f"tokenloom-{tl.__version__}.dist-info/entry_points.txt").decode()
    assert {
        "tokenloom/__init__.py",
        "tokenloom/_core.abi3.so",
        "tokenloom/_core.pyi",
        "tokenloom/py.typed",
    } <= names
    assert not [n for n in names if re.search(r"\.cpython-\d+.*\.so$", n)]
    assert meta["Requires-Python"] == ">=3.10"
    plain = [r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert plain == ["numpy>=1.24"]
    assert "tokenloom=tokenloom.cli:main" in entry_points.replace(" ", "")


def test_wheel_works_in_a_clean_environment(clean_env: Path, tmp_path: Path) -> None:
    py = clean_env / "bin" / "python"
    # -I: neither this checkout nor user site-packages can stand in for the installed wheel.
    out = json.loads(_run([py, "-I", "-c", USE, tmp_path / "ds"], tmp_path, timeout=120))
    site = clean_env.resolve()
    assert Path(out["package"]).resolve().is_relative_to(site)
    assert Path(out["extension"]).name == "_core.abi3.so"
    assert Path(out["extension"]).resolve().is_relative_to(site)
    assert out["version"] == tl.__version__
    assert out["extras_found"] == []  # no torch, tqdm or build dependencies came along
    assert out["docs"] == [[1, 2, 3], [4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14]]
    assert (out["verify"]["documents"], out["verify"]["tokens"]) == (4, 14)
    # Windows of 5 tokens with stride 4 over the 14-token stream, in order: 3 samples,
    # one whole batch of 2.
    assert out["batches"] == [
        {"input_ids": [[1, 2, 3, 4], [5, 6, 7, 8]], "labels": [[2, 3, 4, 5], [6, 7, 8, 9]]}
    ]
    # The console script installed with the wheel runs the same commands as the binary.
    inspect = _run(
        [clean_env / "bin" / "tokenloom", "inspect", tmp_path / "ds", "--json"], tmp_path, 60
    )
    summary = json.loads(inspect)
    assert (summary["num_docs"], summary["num_tokens"], summary["dtype"]) == (4, 14, "u16")


def test_readme_quick_start_runs_verbatim_in_a_clean_environment(
    clean_env: Path, tmp_path: Path
) -> None:
    py = clean_env / "bin" / "python"
    out = _run([py, "-I", "-c", readme_quick_start()], tmp_path, timeout=120)
    # What the README says it prints.
    assert out == "[[1, 2, 3, 4], [5, 6, 7, 8]] [[2, 3, 4, 5], [6, 7, 8, 9]]\n"
    assert (tmp_path / "my-corpus" / "manifest.json").is_file()
