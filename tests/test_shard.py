"""Writing, opening and reading datasets; what users rely on from the format."""

from __future__ import annotations

import gc
import pickle
from importlib.metadata import version
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tokenloom as tl
from conftest import shard_files, write_docs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if TYPE_CHECKING:
    from pathlib import Path


def test_round_trip(dataset: Path, docs: list[list[int]]) -> None:
    ds = tl.open_dataset(dataset)
    assert len(ds) == len(docs)
    assert ds.num_tokens == sum(map(len, docs))
    assert ds.dtype == "uint16"
    assert ds.num_shards > 1
    assert ds.eos_id == 0
    assert ds.vocab_size == 1000
    for i, d in enumerate(docs):
        assert ds[i].tolist() == d
    assert ds[-1].tolist() == docs[-1]
    np.testing.assert_array_equal(ds.doc_lengths(), [len(d) for d in docs])


def test_documents_are_read_only_views(dataset: Path, docs: list[list[int]]) -> None:
    ds = tl.open_dataset(dataset)
    doc = ds[3]
    assert doc.dtype == np.uint16
    assert not doc.flags.writeable
    assert not doc.flags.owndata
    with pytest.raises(ValueError, match="read-only"):
        doc[0] = 1
    del ds  # the view keeps the mapping alive
    gc.collect()
    assert doc.tolist() == docs[3]


def test_out_of_range_index(dataset: Path, docs: list[list[int]]) -> None:
    ds = tl.open_dataset(dataset)
    with pytest.raises(IndexError, match="out of range"):
        ds[len(docs)]
    with pytest.raises(IndexError):
        ds[-len(docs) - 1]


def test_writer_input_kinds(tmp_path: Path) -> None:
    rows = np.arange(12, dtype=np.int32).reshape(3, 4)
    with tl.DatasetWriter(tmp_path / "ds", "u32") as w:
        w.add([1, 2, 3])  # one document
        w.add(np.array([4, 5], dtype=np.uint64))
        w.add(rows)  # one document per row
        w.add(iter([[7], np.array([8, 9], dtype=np.uint8)]))  # iterable of documents
        w.add([])
        assert w.num_docs == 8
    ds = tl.open_dataset(tmp_path / "ds")
    got = [ds[i].tolist() for i in range(len(ds))]
    assert got == [[1, 2, 3], [4, 5], *rows.tolist(), [7], [8, 9], []]
    assert ds.dtype == "uint32"


def test_add_many_flat_splits_by_lengths(tmp_path: Path) -> None:
    tokens = np.arange(1, 11, dtype=np.int64)
    with tl.DatasetWriter(tmp_path / "ds", "u16", shard_bytes=8) as w:
        w.add_many_flat(tokens, [3, 0, 7])
    ds = tl.open_dataset(tmp_path / "ds")
    assert [ds[i].tolist() for i in range(len(ds))] == [[1, 2, 3], [], list(range(4, 11))]
    with tl.DatasetWriter(tmp_path / "bad", "u16") as w, pytest.raises(ValueError, match="length"):
        w.add_many_flat(tokens, [3, 3])


def test_shards_roll_over_at_size(tmp_path: Path) -> None:
    path = write_docs(tmp_path / "ds", [[1] * 10] * 10, shard_bytes=40)  # 2 docs of 20 B a shard
    ds = tl.open_dataset(path)
    assert ds.num_shards == 5
    assert [p.stat().st_size for p in shard_files(path, "bin")] == [40] * 5


def test_empty_dataset(tmp_path: Path) -> None:
    with tl.DatasetWriter(tmp_path / "ds"):
        pass
    ds = tl.open_dataset(tmp_path / "ds")
    assert len(ds) == 0
    assert ds.num_tokens == 0
    assert ds.doc_lengths().tolist() == []


def test_pickle_reopens(dataset: Path) -> None:
    ds = tl.open_dataset(dataset)
    again = pickle.loads(pickle.dumps(ds))
    assert len(again) == len(ds)
    assert again[5].tolist() == ds[5].tolist()
    assert isinstance(again, tl.Dataset)


def test_one_way_to_open_a_dataset(dataset: Path) -> None:
    ds = tl.open_dataset(dataset)
    assert isinstance(ds, tl.Dataset)
    with pytest.warns(DeprecationWarning, match="open_dataset"):
        old = tl.Dataset(dataset)
    assert len(old) == len(ds)
    assert old[3].tolist() == ds[3].tolist()


def test_version_matches_package() -> None:
    assert tl.__version__ == version("tokenloom")


def test_summary(dataset: Path, docs: list[list[int]]) -> None:
    s = tl.open_dataset(dataset).summary()
    lens = sorted(map(len, docs))
    assert s["documents"] == len(docs)
    assert s["doc_len_quantiles"][0.0] == lens[0]
    assert s["doc_len_quantiles"][1.0] == lens[-1]
    assert s["doc_len_quantiles"][0.5] == lens[len(lens) // 2]
    assert "documents   25" in s["text"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    docs=st.lists(st.lists(st.integers(0, 2**32 - 1), max_size=30), max_size=30),
    shard_bytes=st.integers(4, 400),
    wide=st.booleans(),
)
def test_round_trip_property(
    tmp_path: Path, docs: list[list[int]], shard_bytes: int, wide: bool
) -> None:
    dtype = "u32" if wide else "u16"
    if not wide:
        docs = [[t % 65536 for t in d] for d in docs]
    path = tmp_path / "p"
    with tl.DatasetWriter(path, dtype, shard_bytes=shard_bytes, overwrite=True) as w:
        w.add_many(docs)
    ds = tl.open_dataset(path)
    assert [ds[i].tolist() for i in range(len(ds))] == docs
    assert ds.verify(progress=False)["tokens"] == sum(map(len, docs))
