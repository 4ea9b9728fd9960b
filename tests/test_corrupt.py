"""Bad input gives a typed error naming the file, the byte offset and a fix; never garbage."""

from __future__ import annotations

import json
import shutil
import struct
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tokenloom as tl
from conftest import shard_files, write_docs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if TYPE_CHECKING:
    from pathlib import Path

HEADER = 48  # .idx header bytes; offsets follow as u64


def patch(path: Path, at: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(at)
        f.write(data)


def read_all(path: Path) -> list[list[int]]:
    ds = tl.open_dataset(path)
    return [ds[i].tolist() for i in range(len(ds))]


def assert_points_at(err: BaseException, path: Path, offset: int | None = None) -> None:
    assert err.path == str(path), err  # type: ignore[attr-defined]
    assert str(path) in str(err)
    if offset is not None:
        assert err.offset == offset  # type: ignore[attr-defined]
        assert f"at byte {offset}" in str(err)


def test_every_tokenloom_error_has_a_path_and_an_offset() -> None:
    # Class attributes (None) that each raised error sets: code can read them on any error.
    for cls in (tl.CorruptShardError, tl.FormatVersionError, tl.LockedError, tl.JobCancelledError):
        assert issubclass(cls, tl.TokenloomError)
        err = cls("made here")
        assert (err.path, err.offset) == (None, None)


def test_truncated_bin(dataset: Path) -> None:
    bin_ = shard_files(dataset, "bin")[0]
    size = bin_.stat().st_size
    with bin_.open("r+b") as f:
        f.truncate(size - 2)
    with pytest.raises(tl.CorruptShardError, match="truncated") as e:
        tl.open_dataset(dataset)
    assert_points_at(e.value, bin_, size - 2)
    assert "restore" in str(e.value)


def test_idx_bad_magic(dataset: Path) -> None:
    idx = shard_files(dataset, "idx")[1]
    patch(idx, 0, b"MMIDIDX\x00")
    with pytest.raises(tl.CorruptShardError, match="bad magic") as e:
        tl.open_dataset(dataset)
    assert_points_at(e.value, idx, 0)


def test_idx_future_version(dataset: Path) -> None:
    idx = shard_files(dataset, "idx")[0]
    patch(idx, 8, struct.pack("<I", 7))
    with pytest.raises(tl.FormatVersionError, match="version 7") as e:
        tl.open_dataset(dataset)
    assert_points_at(e.value, idx, 8)


def test_idx_offset_past_end(dataset: Path) -> None:
    idx = shard_files(dataset, "idx")[0]
    patch(idx, HEADER + 8, struct.pack("<Q", 10**9))
    ds = tl.open_dataset(dataset)  # O(1) open checks only the first and last offsets
    with pytest.raises(tl.CorruptShardError, match="past the end") as e:
        ds[0]
    assert_points_at(e.value, idx, HEADER + 8)
    with pytest.raises(tl.CorruptShardError):
        ds.verify(progress=False)


def test_idx_offsets_not_monotonic(tmp_path: Path) -> None:
    path = write_docs(tmp_path / "ds", [[1, 2, 3], [4, 5], [6]])
    idx = shard_files(path, "idx")[0]
    patch(idx, HEADER + 16, struct.pack("<Q", 1))  # offsets 0,3,1,6
    ds = tl.open_dataset(path)
    with pytest.raises(tl.CorruptShardError, match="backwards"):
        ds[1]
    with pytest.raises(tl.CorruptShardError, match="backwards"):
        ds.doc_lengths()
    with pytest.raises(tl.CorruptShardError, match=r"checksum|backwards") as e:
        ds.verify(progress=False)
    assert_points_at(e.value, idx)


def test_missing_shard(dataset: Path) -> None:
    bin_ = shard_files(dataset, "bin")[2]
    bin_.unlink()
    with pytest.raises(FileNotFoundError) as e:
        tl.open_dataset(dataset)
    assert bin_.name in str(e.value)


def test_missing_dataset(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"manifest\.json"):
        tl.open_dataset(tmp_path / "nope")


def test_manifest_not_json(dataset: Path) -> None:
    manifest = dataset / "manifest.json"
    manifest.write_text('{"format": "tokenloom.dataset", oops')
    with pytest.raises(tl.CorruptShardError, match="not valid JSON") as e:
        tl.open_dataset(dataset)
    assert_points_at(e.value, manifest)
    assert e.value.offset > 0  # type: ignore[attr-defined]


def test_manifest_edited(dataset: Path) -> None:
    manifest = dataset / "manifest.json"
    m = json.loads(manifest.read_text())
    m["num_docs"] += 1
    manifest.write_text(json.dumps(m))
    with pytest.raises(tl.CorruptShardError, match="checksum mismatch"):
        tl.open_dataset(dataset)


def test_manifest_future_version(dataset: Path) -> None:
    manifest = dataset / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"version": 1', '"version": 2'))
    with pytest.raises(tl.FormatVersionError, match="version 2"):
        tl.open_dataset(dataset)


def test_manifest_disagrees_with_files(tmp_path: Path) -> None:
    a = write_docs(tmp_path / "a", [[1, 2], [3]])
    b = write_docs(tmp_path / "b", [[1], [2], [3, 4, 5]])
    shutil.copy(shard_files(b, "idx")[0], shard_files(a, "idx")[0])
    shutil.copy(shard_files(b, "bin")[0], shard_files(a, "bin")[0])
    with pytest.raises(tl.CorruptShardError, match="manifest says 2 / 3") as e:
        tl.open_dataset(a)
    assert_points_at(e.value, shard_files(a, "idx")[0], 16)


def test_dtype_mismatch(tmp_path: Path) -> None:
    a = write_docs(tmp_path / "a", [[1, 2], [3]])
    b = write_docs(tmp_path / "b", [[1, 2], [3]], dtype="u32")
    shutil.copy(shard_files(b, "idx")[0], shard_files(a, "idx")[0])
    with pytest.raises(tl.CorruptShardError, match="index dtype is u32 but the dataset is u16"):
        tl.open_dataset(a)


def test_tokens_out_of_vocab_on_write(tmp_path: Path) -> None:
    with tl.DatasetWriter(tmp_path / "ds", vocab_size=100) as w:
        w.add([1, 2])
        with pytest.raises(ValueError, match=r"document 1 has token 100 at position 2"):
            w.add([5, 6, 100])
        with pytest.raises(ValueError, match="has token -3 at position 0"):
            w.add([-3])
    with pytest.raises(ValueError, match="does not fit dtype u16"):
        tl.DatasetWriter(tmp_path / "big", "u16", vocab_size=100_000)
    with pytest.raises(ValueError, match="dtype"):
        tl.DatasetWriter(tmp_path / "f", "float32")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not an integer"):
        tl.DatasetWriter(tmp_path / "g").add(np.array([1.5]))


def test_tokens_out_of_vocab_on_verify(tmp_path: Path) -> None:
    path = write_docs(tmp_path / "ds", [[1, 2], [3, 4, 5]], vocab_size=10)
    bin_ = shard_files(path, "bin")[0]
    patch(bin_, 6, struct.pack("<H", 4000))  # token 3 = document 1, position 1
    ds = tl.open_dataset(path)
    assert ds[1].tolist() == [3, 4000, 5]  # reading is not validation: verify is
    with pytest.raises(tl.CorruptShardError, match=r"token 4000 \(document 1\)") as e:
        ds.verify(check_vocab=True, progress=False)
    assert_points_at(e.value, bin_, 6)
    with pytest.raises(tl.CorruptShardError, match="checksum") as e:
        ds.verify(progress=False)
    assert_points_at(e.value, bin_)


def test_verify_detects_flipped_token(dataset: Path) -> None:
    bin_ = shard_files(dataset, "bin")[1]
    data = bytearray(bin_.read_bytes())
    data[len(data) // 2] ^= 0x40
    bin_.write_bytes(bytes(data))
    with pytest.raises(tl.CorruptShardError, match="checksum") as e:
        tl.open_dataset(dataset).verify(progress=False)
    assert_points_at(e.value, bin_)


def test_errors_share_a_base_class() -> None:
    for cls in (tl.CorruptShardError, tl.FormatVersionError, tl.JobCancelledError):
        assert issubclass(cls, tl.TokenloomError)


def test_cancelled_error_is_not_asyncio_s_and_the_old_name_warns() -> None:
    import asyncio

    assert tl.JobCancelledError.__name__ == "JobCancelledError"
    assert not issubclass(tl.JobCancelledError, asyncio.CancelledError)
    with pytest.warns(DeprecationWarning, match="JobCancelledError"):
        assert tl.CancelledError is tl.JobCancelledError
    with pytest.warns(DeprecationWarning, match="BatchSelector"):
        assert tl.UDSSelector is tl.BatchSelector
    import tokenloom.select

    with pytest.warns(DeprecationWarning, match="tokenloom.select.BatchSelector"):
        assert tokenloom.select.UDSSelector is tl.BatchSelector
    with pytest.raises(AttributeError, match="NoSuchSelector"):
        _ = tokenloom.select.NoSuchSelector


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_random_index_mutations(tmp_path: Path, data: st.DataObject) -> None:
    """Any byte edits or truncation of an .idx: valid data, or a clean typed error."""
    docs = [[1, 2, 3], [4], [], [5, 6]]
    path = write_docs(tmp_path / "m", docs, overwrite=True)
    idx = shard_files(path, "idx")[0]
    raw = bytearray(idx.read_bytes())
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    idx.write_bytes(bytes(raw))
    error: Exception | None = None
    try:
        ds = tl.open_dataset(path)
        got = [ds[i].tolist() for i in range(len(ds))]
        ds.verify(progress=False)
    except (tl.CorruptShardError, tl.FormatVersionError) as e:
        error = e
    if error is None:
        assert got == docs  # an edit that verify accepts left the data intact
    else:
        assert error.path == str(idx)  # type: ignore[attr-defined]
