"""Every ordering default is defined once, in the core (``rust/core/src/order/defaults.rs``):
``tokenloom.order``'s signature, the type stubs and the ``tokenloom order`` flags show the
same values, so changing a default in one place cannot leave another behind."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import tokenloom as tl
from conftest import run_cli
from tokenloom import _core

STUB = Path(tl.__file__).parent / "_core.pyi"
# The public ICLM script's traversal (9 neighbours, segments of 21): the reference variant.
SCRIPT = {"reference_k_traverse": 9, "reference_segment": 21}


def stub_defaults(function: str) -> dict[str, object]:
    tree = ast.parse(STUB.read_text())
    (fn,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function]
    args = fn.args.args
    values = fn.args.defaults
    out = {}
    for a, v in zip(args[len(args) - len(values) :], values, strict=True):
        if not (isinstance(v, ast.Constant) and v.value is Ellipsis):
            out[a.arg] = ast.literal_eval(v)
    return out


def test_the_python_signature_reads_the_core() -> None:
    d = _core.ORDER_DEFAULTS
    assert {k: d[k] for k in SCRIPT} == SCRIPT
    params = inspect.signature(tl.order).parameters
    for key in ("seq_len", "k", "name", "dedup", "variant", "max_segment", "seed", "dim"):
        assert params[key].default == d[key], key
    assert params["max_tokens"].default == d["max_tokens"]
    assert params["task_memory"].default == d["task_memory"]
    # The staged engines' nprobe (None in the signature: the core's, every list when small).
    assert params["nprobe"].default is None
    assert _core.order_ivf_defaults(10**6)[1] == d["nprobe"]
    nlist, nprobe, _ = _core.order_ivf_defaults(10_000)
    assert nprobe == nlist


def test_the_stubs_agree_with_the_core() -> None:
    d = _core.ORDER_DEFAULTS
    alias = {"k_traverse": "reference_k_traverse", "min_segment": "reference_segment"}
    for fn in ("order_dataset", "order_frequencies", "order_embed_part"):
        stub = stub_defaults(fn)
        for arg, value in stub.items():
            key = alias.get(arg, arg)
            if key in d:
                assert value == d[key], (fn, arg)
    # pyo3 shows defaults that are Rust constants as ``...``: the stubs do too, or agree.
    assert "k" not in stub_defaults("order_dataset")


def test_the_cli_flags_agree_with_the_core() -> None:
    r = run_cli("order", "--help")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    d = _core.ORDER_DEFAULTS
    flags = {"seq-len": "seq_len", "k": "k", "name": "name", "dedup": "dedup",
             "max-segment": "max_segment", "seed": "seed", "dim": "dim",
             "max-tokens": "max_tokens"}  # fmt: skip
    for flag, key in flags.items():
        m = re.search(rf"--{flag} <[A-Z_]+>.*?\[default: ([^\]]+)\]", text)
        assert m, flag
        assert m.group(1) == str(d[key]), (flag, m.group(1), d[key])


def test_the_loader_reads_its_defaults_from_the_core() -> None:
    d = _core.LOADER_DEFAULTS
    params = inspect.signature(tl.TokenDataset.__init__).parameters
    for key in ("seed", "shuffle", "shuffle_window", "dtype", "drop_last", "threads", "prefetch"):
        assert params[key].default == d[key], key
    # What the bindings fall back to when the Python layer passes nothing.
    assert d == {
        "seed": 0,
        "shuffle": True,
        "shuffle_window": 0,
        "mode": "concat",
        "dtype": "int64",
        "drop_last": True,
        "pad_id": 0,
        "threads": 2,
        "prefetch": 2,
    }


def test_batch_dtypes_take_numpy_and_short_names(tmp_path: Path) -> None:
    import numpy as np
    import pytest

    with tl.DatasetWriter(tmp_path / "d", "uint16") as w:
        for i in range(8):
            w.add(np.arange(i, i + 20) % 50)
    for name, want in (("int32", np.int32), ("i32", np.int32), ("I64", np.int64)):
        ds = tl.TokenDataset(tmp_path / "d", 8, 2, dtype=name, output="numpy", shuffle=False)
        assert ds.dtype == np.dtype(want).name
        assert next(iter(ds))["input_ids"].dtype == want
    with pytest.raises(ValueError, match=r"'int8'|\"int8\""):
        tl.TokenDataset(tmp_path / "d", 8, 2, dtype="int8")
