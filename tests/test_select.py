"""Online batch selection: utility, sketch, the rules against a NumPy reference, resumption."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tokenloom as tl
import torch
from hypothesis import given, settings
from hypothesis import strategies as st


def logits_batch(b: int, length: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, length, vocab, generator=g) * 3


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 4),
    length=st.integers(1, 12),
    vocab=st.integers(1, 40),
    seed=st.integers(0, 2**31),
    masked=st.booleans(),
)
def test_nuclear_norm_equals_svdvals(
    b: int, length: int, vocab: int, seed: int, masked: bool
) -> None:
    x = logits_batch(b, length, vocab, seed)
    mask = (torch.rand(b, length, generator=torch.Generator().manual_seed(seed)) > 0.3).long()
    m = mask if masked else None
    want = torch.stack(
        [
            torch.linalg.svdvals(x[i][mask[i].bool()] if masked else x[i]).sum()
            if not masked or bool(mask[i].any())
            else torch.tensor(0.0)
            for i in range(b)
        ]
    )
    for method in ("svd", "gram", "auto"):
        got = tl.nuclear_norm(x, m, method=method)
        assert got.shape == (b,)
        torch.testing.assert_close(got, want.float(), rtol=1e-4, atol=1e-4)


def test_gram_path_is_exact_on_a_decaying_spectrum() -> None:
    # Real logits are close to low rank: the small singular values must survive the Gram path.
    g = torch.Generator().manual_seed(0)
    low = torch.randn(2, 64, 4, generator=g) @ torch.randn(2, 4, 3000, generator=g) * 3
    x = low + 0.01 * torch.randn(2, 64, 3000, generator=g)
    truth = torch.linalg.svdvals(x.double()).sum(-1)
    got = tl.nuclear_norm(x, method="gram").double()
    assert float(((got - truth).abs() / truth).max()) < 1e-4


def test_fastjl_equals_its_dense_form() -> None:
    sk = tl.FastJL(max_len=16, vocab=50, r_t=4, r_v=8, seed=3)
    x = logits_batch(3, 11, 50, 1)
    got = sk(x)
    c_t, c_v = sk.dense()
    padded = torch.nn.functional.pad(x.double(), (0, 0, 0, 16 - 11))
    want = (c_t @ padded @ c_v).reshape(3, -1)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-3)
    assert got.shape == (3, 32)
    # the same seed gives the same projection; another seed another one
    torch.testing.assert_close(tl.FastJL(16, 50, 4, 8, seed=3)(x), got)
    assert not torch.allclose(tl.FastJL(16, 50, 4, 8, seed=4)(x), got)


def reference_uds(
    steps: list[tuple[np.ndarray, np.ndarray]], keep: int, cap: int, alpha: float
) -> list[list[int]]:
    """The paper's rule in NumPy: FIFO memory of kept sketches, mean L2 distance, top-k."""
    memory: list[np.ndarray] = []
    out = []
    for u, z in steps:
        div = mean_distances(z, memory) if memory else np.zeros(len(u))
        out.append(keep_best(u.astype(np.float64) + alpha * div, keep, z, memory, cap))
    return out


def mean_distances(z: np.ndarray, memory: list[np.ndarray]) -> np.ndarray:
    """Mean L2 distance of each row of ``z`` to the memory's rows, in float64."""
    q = np.stack(memory).astype(np.float64)
    return np.sqrt(((z[:, None, :].astype(np.float64) - q[None]) ** 2).sum(-1)).mean(1)


def keep_best(
    score: np.ndarray, keep: int, z: np.ndarray, memory: list[np.ndarray], cap: int
) -> list[int]:
    """The ``keep`` best rows (ties to the lower index); their sketches join the FIFO memory."""
    kept = sorted(range(len(score)), key=lambda i: (-score[i], i))[:keep]
    for i in kept:
        memory.append(z[i])
        if len(memory) > cap:
            memory.pop(0)
    return kept


@settings(max_examples=30, deadline=None)
@given(
    n_steps=st.integers(1, 10),
    b=st.integers(2, 8),
    keep=st.integers(1, 3),
    cap=st.integers(1, 6),
    seed=st.integers(0, 2**31),
    cut=st.integers(0, 10),
)
def test_select_from_matches_the_reference_and_resumes(
    n_steps: int, b: int, keep: int, cap: int, seed: int, cut: int
) -> None:
    keep = min(keep, b)
    rng = np.random.default_rng(seed)
    sketch = (2, 3)
    steps = [
        (rng.random(b, dtype=np.float32) * 10, rng.random((b, 6), dtype=np.float32) * 10)
        for _ in range(n_steps)
    ]
    want = reference_uds(steps, keep, cap, alpha=0.7)
    sel = tl.BatchSelector(keep, buffer_size=cap, alpha=0.7, sketch=sketch, seed=seed)
    for t, (u, z) in enumerate(steps):
        if t == cut:  # checkpoint through torch.save and continue in a new selector
            buf = io.BytesIO()
            torch.save(sel.state_dict(), buf)
            buf.seek(0)
            sel = tl.BatchSelector(keep, buffer_size=cap, alpha=0.7, sketch=sketch, seed=seed)
            sel.load_state_dict(torch.load(buf))
        assert sel.select_from(u, z).tolist() == want[t], f"step {t}"


def test_select_on_logits_keeps_rows_and_fills_memory() -> None:
    sel = tl.BatchSelector(keep=2, buffer_size=4, sketch=(2, 4), max_len=8)
    x = logits_batch(5, 6, 30, 0)
    mask = torch.ones(5, 6, dtype=torch.long)
    mask[0, :3] = 0
    keep = sel.select(x, mask)
    assert keep.dtype == torch.int64
    assert keep.shape == (2,)
    u, _ = sel.scores(x, mask)
    assert keep[0] == int(torch.argmax(u))  # empty memory: utility alone decides
    assert sel.state_dict()["count"] == 2
    sel.select(x, mask)
    sel.select(x, mask)
    assert sel.state_dict()["count"] == 4  # full: the oldest go first


def test_scores_follow_the_vocabulary_of_each_batch() -> None:
    """A selector scoring logits of another vocabulary sketches them as a new selector
    would (its sketch is rebuilt for the vocabulary, with the same seed)."""
    sel = tl.BatchSelector(keep=2, sketch=(2, 4), max_len=8, seed=3)
    for vocab in (30, 50, 30):
        x = logits_batch(4, 6, vocab, vocab)
        _, got = sel.scores(x)
        _, want = tl.BatchSelector(keep=2, sketch=(2, 4), max_len=8, seed=3).scores(x)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got, tl.FastJL(8, vocab, 2, 4, seed=3)(x))


def test_other_rules() -> None:
    u = np.array([0.5, 3.0, 1.0, 2.0], np.float32)
    assert tl.BatchSelector(2, rule="max-loss").select_from(u).tolist() == [1, 3]
    r = tl.BatchSelector(3, rule="random", seed=1)
    a, b = r.select_from(u), r.select_from(u)
    assert len(set(a.tolist())) == 3
    assert a.tolist() != b.tolist()
    assert tl.BatchSelector(3, rule="random", seed=1).select_from(u).tolist() == a.tolist()
    # memory: the origin; candidates: two near-duplicates far away, one moderately far
    z = np.array([[5, 5], [5, 5.01], [-3, 0]], np.float32)
    zero3 = np.zeros(3, np.float32)
    picks = {}
    for rule in ("uds", "uds-greedy"):
        sel = tl.BatchSelector(2, rule=rule, sketch=(1, 2), alpha=10.0)
        sel.select_from(np.zeros(2, np.float32), np.zeros((2, 2), np.float32))
        picks[rule] = sel.select_from(zero3, z).tolist()
    assert picks["uds"] == [1, 0]  # both duplicates
    assert picks["uds-greedy"] == [1, 2]  # the second pick moves away from the first


def test_scaled_rule_ignores_the_logit_scale() -> None:
    rng = np.random.default_rng(0)
    steps = [
        (rng.random(6).astype(np.float32), rng.random((6, 4)).astype(np.float32)) for _ in range(6)
    ]
    a = tl.BatchSelector(2, rule="uds-scaled", sketch=(2, 2), alpha=1.0)
    b = tl.BatchSelector(2, rule="uds-scaled", sketch=(2, 2), alpha=1.0)
    for u, z in steps:
        assert a.select_from(u, z).tolist() == b.select_from(u * 250, z * 250).tolist()


def test_bad_input() -> None:
    sel = tl.BatchSelector(keep=3, sketch=(2, 2), max_len=4)
    with pytest.raises(ValueError, match="batch, length, vocab"):
        sel.select(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="mask has shape"):
        sel.select(torch.zeros(4, 3, 5), torch.ones(4, 2))
    with pytest.raises(ValueError, match="larger than the candidate batch"):
        sel.select(torch.randn(2, 3, 5))
    bad = torch.randn(4, 3, 5)
    bad[2, 1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"samples \[2\] hold NaN"):
        sel.select(bad)
    with pytest.raises(ValueError, match="max_len=4"):
        sel.select(torch.randn(4, 9, 5))
    with pytest.raises(ValueError, match="sketches have shape"):
        sel.select_from(np.ones(4, np.float32), np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="rule"):
        tl.BatchSelector(2, rule="best")
    other = tl.BatchSelector(keep=3, sketch=(2, 4), max_len=4)
    with pytest.raises(ValueError, match="same settings"):
        other.load_state_dict(sel.state_dict())
    future = {**sel.state_dict(), "version": 99}
    with pytest.raises(ValueError, match="selector state version 99 is not"):
        sel.load_state_dict(future)


def test_state_read_while_another_thread_selects() -> None:
    """A checkpoint taken from one thread while another selects must not hang the process
    (the selector's lock is never held while waiting for the GIL); every state read holds
    whole selections, and the final memory is that of a selector that made the same
    selections alone. Run in a child process so that a hang fails the test instead of the
    suite; the child reports how many selections ran and how many reads overlapped one."""
    import json
    import subprocess
    import sys

    code = """
import json, threading, numpy as np, tokenloom as tl
def make():
    return tl.BatchSelector(keep=16, buffer_size=1024, sketch=(4, 128), seed=0)
sel = make()
u = np.random.default_rng(0).random(256, dtype=np.float32)
z = np.random.default_rng(1).random((256, 512), dtype=np.float32)
sel.state_dict()  # imports done before the race
stop = threading.Event()
selects = [0]
busy = [False]
def selecting():
    while not stop.is_set():
        busy[0] = True
        sel.select_from(u, z)
        busy[0] = False
        selects[0] += 1
t = threading.Thread(target=selecting)
t.start()
counts, overlapped = set(), 0
for _ in range(200):
    during = busy[0]
    counts.add(int(sel.state_dict()["count"]))
    overlapped += during
stop.set()
t.join()
ref = make()
for _ in range(selects[0]):
    ref.select_from(u, z)
final = sel.state_dict()
print(json.dumps({"selects": selects[0], "overlapped": overlapped, "counts": sorted(counts),
                  "final_count": int(final["count"]),
                  "same_memory": bool(np.array_equal(final["rows"], ref.state_dict()["rows"]))}))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["selects"] >= 2, got  # selections ran while the state was read
    assert got["overlapped"] >= 1, got  # some reads came while a selection was under way
    # each selection keeps 16 rows in a memory of 1,024: no read saw a half selection
    assert all(c % 16 == 0 and c <= 1024 for c in got["counts"]), got
    assert got["final_count"] == min(1024, 16 * got["selects"]), got
    assert got["same_memory"], got  # the reads changed nothing


def reference_scaled(
    steps: list[tuple[np.ndarray, np.ndarray]], keep: int, cap: int, alpha: float
) -> list[list[int]]:
    """``uds-scaled`` in NumPy: utility and mean distance to the memory each z-scored with the
    mean and sample variance of every value seen so far (distances only once the memory holds
    something), ``z(u) + alpha * z(div)``, top-k; the memory as in :func:`reference_uds`."""
    memory: list[np.ndarray] = []
    seen_u: list[float] = []
    seen_d: list[float] = []
    out = []

    def z(x: np.ndarray, seen: list[float]) -> np.ndarray:
        if len(seen) < 2 or np.var(seen, ddof=1) == 0:
            return np.zeros_like(x)
        return (x - np.mean(seen)) / np.sqrt(np.var(seen, ddof=1))

    for u, sk in steps:
        u64 = u.astype(np.float64)
        seen_u += u64.tolist()
        score = z(u64, seen_u)
        if memory:
            div = mean_distances(sk, memory)
            seen_d += div.tolist()
            score = score + alpha * z(div, seen_d)
        out.append(keep_best(score, keep, sk, memory, cap))
    return out


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(3, 8), keep=st.integers(1, 2), cap=st.integers(1, 6), seed=st.integers(0, 2**31)
)
def test_scaled_rule_matches_the_reference(b: int, keep: int, cap: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    steps = [
        (rng.random(b, dtype=np.float32) * 10, rng.random((b, 4), dtype=np.float32) * 10)
        for _ in range(8)
    ]
    want = reference_scaled(steps, keep, cap, alpha=3.0)
    sel = tl.BatchSelector(keep, buffer_size=cap, alpha=3.0, sketch=(2, 2), rule="uds-scaled")
    assert [sel.select_from(u, z).tolist() for u, z in steps] == want


def test_scaled_rule_weighs_diversity() -> None:
    """Equal utilities: only the diversity term can rank, so the far candidate wins."""
    sel = tl.BatchSelector(1, rule="uds-scaled", sketch=(1, 2), buffer_size=4)
    sel.select_from(np.array([1.0, 0.0], np.float32), np.zeros((2, 2), np.float32))
    z = np.array([[0.1, 0], [9, 9], [0, 0.2]], np.float32)
    assert sel.select_from(np.array([2.0, 2.0, 2.0], np.float32), z).tolist() == [1]


def test_auto_rule_calibrates_once_and_checks_the_run() -> None:
    assert tl.BatchSelector(1).alpha == 2.5e-3
    assert tl.BatchSelector(1, rule="uds-auto").alpha == 1.0
    assert tl.BatchSelector(1, rule="uds-scaled").alpha == 1.0
    rng = np.random.default_rng(0)
    sel = tl.BatchSelector(2, rule="uds-auto", calibration=3, sketch=(1, 4), buffer_size=8)
    alphas = []
    for _ in range(7):
        sel.select_from(rng.random(6, dtype=np.float32) * 100, rng.random((6, 4), dtype=np.float32))
        alphas.append(sel.effective_alpha())
    assert alphas[0] == 0.0  # empty memory: nothing measured yet
    assert len(set(alphas[1:4])) == 3  # the window: alpha moves
    assert len(set(alphas[3:])) == 1  # then stays
    sel.check_run(4)
    with pytest.raises(ValueError, match=r"longer than the run \(3 candidate batches\)"):
        sel.check_run(3)
    with pytest.raises(ValueError, match="calibration window of at least one batch"):
        tl.BatchSelector(1, rule="uds-auto", calibration=0)
