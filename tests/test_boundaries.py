"""Attention boundaries of the batches: ``boundaries="document"`` (positions restart and
``cu_seqlens`` cuts at every document piece) and ``"row"`` (one sequence per row), the
default following the mode (row for ordered rows), checked array by array against rows laid
out here from the dataset's documents."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
import tokenloom as tl
from hypothesis import given, settings
from hypothesis import strategies as st

if TYPE_CHECKING:
    from pathlib import Path

SEQ = 16


def dataset(root: Path, lengths: list[int]) -> Path:
    with tl.DatasetWriter(root, "u16", eos_id=0, vocab_size=5000, overwrite=True) as w:
        for d, n in enumerate(lengths):
            w.add(np.arange(1, n + 1, dtype=np.uint16) + 100 * (d % 40))
    return root


def reference(ds: tl.Dataset, docs: list[int], seq_len: int) -> list[list[tuple[int, int]]]:
    """Rows of ``seq_len + 1`` (token, document) pairs: ``docs`` end to end, the last row
    padded (token 0, document -1)."""
    stream = [(int(t), d) for d in docs for t in ds[d]]
    row = seq_len + 1
    rows = [stream[i : i + row] for i in range(0, len(stream), row)]
    rows[-1] = rows[-1] + [(0, -1)] * (row - len(rows[-1]))
    return rows


def expected(
    rows: list[list[tuple[int, int]]], seq_len: int, per_row: bool
) -> dict[str, np.ndarray]:
    inp, lab, pos, ids, cu = [], [], [], [], [0]
    for r, row in enumerate(rows):
        inp.append([t for t, _ in row[:seq_len]])
        lab.append([t if d >= 0 else -100 for t, d in row[1:]])
        ids.append([d for _, d in row[:seq_len]])
        p = []
        for i in range(seq_len):
            new_piece = i == 0 or ids[-1][i] != ids[-1][i - 1]
            if not per_row and new_piece and i > 0:
                cu.append(r * seq_len + i)
            p.append(i if per_row else (0 if new_piece else p[-1] + 1))
        pos.append(p)
        cu.append((r + 1) * seq_len)
    return {
        "input_ids": np.array(inp),
        "labels": np.array(lab),
        "position_ids": np.array(pos),
        "doc_ids": np.array(ids),
        "cu_seqlens": np.array(cu),
    }


@settings(max_examples=12, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=2, max_size=12), seed=st.integers(0, 99))
def test_ordered_rows_attend_across_documents_by_default(
    tmp_path_factory: pytest.TempPathFactory, lengths: list[int], seed: int
) -> None:
    root = dataset(tmp_path_factory.mktemp("b") / "ds", lengths)
    ds = tl.open_dataset(root)
    docs = np.random.default_rng(seed).permutation(len(lengths)).tolist()
    tl.write_order(root, root / "o.order", docs, [0, len(docs)])
    rows = reference(ds, docs, SEQ)
    for boundaries, per_row in ((None, True), ("row", True), ("document", False)):
        loader = tl.TokenDataset(
            root,
            SEQ,
            batch_size=1,
            order=root / "o.order",
            shuffle=False,
            drop_last=False,
            output="numpy",
            boundaries=boundaries,
        )
        assert loader.boundaries == ("row" if per_row else "document")
        got = [b for b in loader]
        assert len(got) == len(rows)
        for r, b in enumerate(got):
            for key, value in expected([rows[r]], SEQ, per_row).items():
                assert np.array_equal(b[key], value), (boundaries, r, key)
            assert b["sample_ids"].tolist() == [r]


def test_concat_keeps_document_boundaries_and_row_is_the_gpt_layout(tmp_path: Path) -> None:
    lengths = [7, 30, 3, 12, 25, 9, 18]
    root = dataset(tmp_path / "ds", lengths)
    ds = tl.open_dataset(root)
    stream = [(int(t), d) for d in range(len(lengths)) for t in ds[d]]
    rows = [stream[i * SEQ : i * SEQ + SEQ + 1] for i in range((len(stream) - 1) // SEQ)]
    for boundaries, per_row in ((None, False), ("document", False), ("row", True)):
        loader = tl.TokenDataset(
            root, SEQ, batch_size=len(rows), shuffle=False, output="numpy", boundaries=boundaries
        )
        (b,) = list(loader)
        want = expected(rows, SEQ, per_row)
        for key, value in want.items():
            assert np.array_equal(b[key], value), (boundaries, key)


def test_pack_rows_and_reoffered_rows_follow_the_setting(tmp_path: Path) -> None:
    root = dataset(tmp_path / "ds", [5, 9, 4, 11, 6, 3, 8])
    for boundaries in ("document", "row"):
        loader = tl.TokenDataset(
            root,
            SEQ,
            batch_size=2,
            mode="pack",
            shuffle=False,
            output="numpy",
            boundaries=boundaries,
        )
        b = next(iter(loader))
        if boundaries == "row":
            assert np.array_equal(b["position_ids"], np.tile(np.arange(SEQ), (2, 1)))
            assert b["cu_seqlens"].tolist() == [0, SEQ, 2 * SEQ]
        else:
            assert (b["position_ids"] == 0).sum() > 2
            assert len(b["cu_seqlens"]) > 3
        # Rows assembled again (as re-offered rows are) come out the same.
        again = loader._get_stream().assemble(
            [(0, int(i)) for i in b["sample_ids"]], pad_id=loader.pad_id
        )
        for key in ("position_ids", "cu_seqlens", "doc_ids"):
            assert np.array_equal(again[key], b[key]), key


def test_unknown_boundaries_are_refused_at_once(tmp_path: Path) -> None:
    root = dataset(tmp_path / "ds", [5, 9])
    with pytest.raises(ValueError, match=r'unknown boundaries "rows".*"document" or "row"'):
        tl.TokenDataset(root, SEQ, batch_size=1, boundaries="rows")
