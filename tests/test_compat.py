"""Foreign formats read in place: Megatron ``.bin/.idx`` and datatrove ``.ds/.ds.index``.

Megatron files are written by megatron-core's own ``IndexedDatasetBuilder`` and read back
by its ``IndexedDataset``; datatrove files by datatrove's own ``TokenizedFile`` writer.
"""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tokenloom as tl
from conftest import run_cli, write_docs

if TYPE_CHECKING:
    from types import ModuleType


def megatron() -> ModuleType:
    """megatron-core's indexed dataset module (its import warns about optional fused kernels)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets import indexed_dataset
    return indexed_dataset


def write_megatron(prefix: Path, docs: list[list[int]], dtype: type = np.uint16) -> Path:
    """``prefix.bin``/``prefix.idx`` written by megatron-core, one sequence per document."""
    import torch

    m = megatron()
    builder = m.IndexedDatasetBuilder(f"{prefix}.bin", dtype=dtype)
    for d in docs:
        builder.add_item(torch.tensor(d, dtype=torch.int64))
        builder.end_document()
    builder.finalize(f"{prefix}.idx")
    return prefix


def write_datatrove(folder: Path, name: str, docs: list[list[int]], token_size: int = 2) -> Path:
    """``name`` (+ ``.index``, ``.metadata``) written by datatrove's ``TokenizedFile``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from datatrove.pipeline.tokens.tokenizer import TokenizedFile

    f = TokenizedFile(
        str(folder),
        name,
        save_final_metadata=True,
        token_size=token_size,
        tokenizer_name_or_path="t",
    )
    for d in docs:
        f.write(d, None)
    f.close()
    return folder / name


def read_all(path: Path | str) -> list[list[int]]:
    ds = tl.open_dataset(path)
    return [ds[i].tolist() for i in range(len(ds))]


def batches(path: Path, **kw: Any) -> list[dict[str, Any]]:
    return list(tl.TokenDataset(path, output="numpy", seed=3, **kw))


def assert_same_batches(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]), err_msg=k)


@pytest.mark.parametrize(("dtype", "name"), [(np.uint16, "uint16"), (np.int32, "uint32")])
def test_megatron_written_by_megatron_core_reads_token_for_token(
    tmp_path: Path, docs: list[list[int]], dtype: type, name: str
) -> None:
    prefix = write_megatron(tmp_path / "web_text_document", docs, dtype)
    for p in (prefix, f"{prefix}.bin", f"{prefix}.idx"):
        ds = tl.open_dataset(p)
        assert ds.dtype == name
        assert len(ds) == len(docs)
        assert [ds[i].tolist() for i in range(len(ds))] == docs
        assert ds.doc_lengths().tolist() == [len(d) for d in docs]
    native = write_docs(tmp_path / "native", docs, dtype=name)
    for kw in ({"mode": "concat"}, {"mode": "pack"}):
        assert_same_batches(
            batches(prefix, seq_len=16, batch_size=2, **kw),
            batches(native, seq_len=16, batch_size=2, **kw),
        )


def test_convert_to_megatron_is_read_by_megatron_core(
    tmp_path: Path, dataset: Path, docs: list[list[int]]
) -> None:
    out = tmp_path / "conv_text_document"
    r = run_cli("convert", dataset, out, "--to", "megatron")
    assert r.returncode == 0, r.stderr
    assert "25 documents" in r.stdout
    mds = megatron().IndexedDataset(str(out))
    assert len(mds) == len(docs)
    assert [mds[i].tolist() for i in range(len(mds))] == docs
    assert read_all(out) == docs
    # Existing output needs --overwrite (usage error, nothing changed).
    before = (tmp_path / "conv_text_document.idx").read_bytes()
    r = run_cli("convert", dataset, out, "--to", "megatron")
    assert r.returncode == 2
    assert "already exists" in r.stderr
    assert (tmp_path / "conv_text_document.idx").read_bytes() == before
    assert run_cli("convert", dataset, out, "--to", "megatron", "--overwrite").returncode == 0


def test_convert_megatron_to_tokenloom_and_verify(tmp_path: Path, docs: list[list[int]]) -> None:
    prefix = write_megatron(tmp_path / "m", docs)
    out = tmp_path / "tl"
    r = run_cli("convert", prefix, out, "--to", "tokenloom")
    assert r.returncode == 0, r.stderr
    assert read_all(out) == docs
    assert (out / "manifest.json").exists()
    for p in (out, prefix):
        r = run_cli("verify", p)
        assert r.returncode == 0, r.stderr
    r = run_cli("inspect", prefix, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["num_docs"] == len(docs)


@pytest.mark.parametrize(("token_size", "name"), [(2, "uint16"), (4, "uint32")])
def test_datatrove_written_by_datatrove_reads_token_for_token(
    tmp_path: Path, docs: list[list[int]], token_size: int, name: str
) -> None:
    big = [[t + (70000 if token_size == 4 else 0) for t in d] for d in docs]
    a = write_datatrove(tmp_path, "000_web.ds", big[:10], token_size)
    b = write_datatrove(tmp_path, "001_web.ds", big[10:], token_size)
    assert read_all(a) == big[:10]
    assert read_all(f"{b}.index") == big[10:]
    folder = tl.open_dataset(tmp_path)
    assert folder.dtype == name
    assert folder.num_shards == 2
    assert [folder[i].tolist() for i in range(len(folder))] == big
    native = write_docs(tmp_path / "native", big, dtype=name, vocab_size=None)
    assert_same_batches(
        batches(tmp_path, seq_len=8, batch_size=3, mode="pack"),
        batches(native, seq_len=8, batch_size=3, mode="pack"),
    )
    r = run_cli("convert", tmp_path, tmp_path / "m_text_document", "--to", "megatron")
    assert r.returncode == 0, r.stderr
    assert read_all(tmp_path / "m_text_document") == big


# Bad input: a typed error that names the file.


def patch(path: Path, at: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(at)
        f.write(data)


@pytest.fixture
def mega(tmp_path: Path, docs: list[list[int]]) -> Path:
    return write_megatron(tmp_path / "d_text_document", docs)


def test_megatron_bad_magic(mega: Path) -> None:
    idx = Path(f"{mega}.idx")
    patch(idx, 0, b"XXIDIDX")
    with pytest.raises(tl.CorruptShardError, match="bad magic") as e:
        tl.open_dataset(mega)
    assert e.value.path == str(idx)  # type: ignore[attr-defined]
    assert e.value.offset == 0  # type: ignore[attr-defined]


def test_megatron_bad_version(mega: Path) -> None:
    idx = Path(f"{mega}.idx")
    patch(idx, 9, struct.pack("<Q", 2))
    with pytest.raises(tl.FormatVersionError) as e:
        tl.open_dataset(mega)
    assert str(idx) in str(e.value)


@pytest.mark.parametrize(("code", "name"), [(5, "int64"), (7, "float32"), (1, "uint8"), (42, "")])
def test_megatron_unsupported_dtype(mega: Path, code: int, name: str) -> None:
    idx = Path(f"{mega}.idx")
    patch(idx, 17, bytes([code]))
    with pytest.raises(tl.CorruptShardError, match=f"dtype code {code}") as e:
        tl.open_dataset(mega)
    assert str(idx) in str(e.value)
    assert name in str(e.value)


def test_megatron_truncated_files(mega: Path) -> None:
    bin_, idx = Path(f"{mega}.bin"), Path(f"{mega}.idx")
    data = bin_.read_bytes()
    bin_.write_bytes(data[:-2])
    with pytest.raises(tl.CorruptShardError, match="truncated") as e:
        tl.open_dataset(mega)
    assert e.value.path == str(bin_)  # type: ignore[attr-defined]
    bin_.write_bytes(data)
    raw = idx.read_bytes()
    for cut in (0, 20, 40, len(raw) - 1):
        idx.write_bytes(raw[:cut])
        with pytest.raises(tl.CorruptShardError) as e:
            tl.open_dataset(mega)
        assert e.value.path == str(idx)  # type: ignore[attr-defined]


def test_megatron_pointer_out_of_bounds(mega: Path, docs: list[list[int]]) -> None:
    idx = Path(f"{mega}.idx")
    n = len(docs)
    patch(idx, 34 + 4 * n + 8 * 3, struct.pack("<q", 1 << 40))
    ds = tl.open_dataset(mega)
    assert ds[0].tolist() == docs[0]
    with pytest.raises(tl.CorruptShardError) as e:
        ds[3]
    assert e.value.path == str(idx)  # type: ignore[attr-defined]
    r = run_cli("verify", mega)
    assert r.returncode == 1
    assert str(idx) in r.stderr


def test_megatron_index_with_stray_bytes_does_not_open(mega: Path, docs: list[list[int]]) -> None:
    """The .idx size is exact for its counts; the one allowed extra is megatron-core's
    multimodal layout (one mode byte per sequence), read from a file megatron-core wrote."""
    import torch

    idx = Path(f"{mega}.idx")
    raw = idx.read_bytes()
    n = len(docs)
    for extra in sorted({1, 7, 8, n - 1, n + 1, 2 * n} - {0, n}):
        idx.write_bytes(raw + b"\x01" * extra)
        with pytest.raises(tl.CorruptShardError, match=f"but the file has {len(raw) + extra}") as e:
            tl.open_dataset(mega)
        assert e.value.path == str(idx)  # type: ignore[attr-defined]
        assert e.value.offset == 18  # type: ignore[attr-defined]
    m = megatron()
    builder = m.IndexedDatasetBuilder(f"{mega}_mm.bin", dtype=np.uint16, multimodal=True)
    for i, d in enumerate(docs):
        builder.add_item(torch.tensor(d, dtype=torch.int64), mode=i % 3)
        builder.end_document()
    builder.finalize(f"{mega}_mm.idx")
    assert Path(f"{mega}_mm.idx").stat().st_size == len(raw) + n
    assert read_all(f"{mega}_mm") == docs


def test_megatron_document_table_out_of_order_fails_verify(
    tmp_path: Path, docs: list[list[int]]
) -> None:
    """megatron-core groups sequences into documents; its document table never goes back.
    A table that does opens (opening checks its ends only) but fails verify, at the entry."""
    m = megatron()
    prefix = tmp_path / "grouped"
    builder = m.IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.uint16)
    for a in range(0, len(docs), 3):
        group = docs[a : a + 3]
        tokens = np.array([t for d in group for t in d], dtype=np.int64)
        builder.add_document(tokens, [len(d) for d in group])
    builder.finalize(f"{prefix}.idx")
    mds = m.IndexedDataset(str(prefix))
    table = np.array(mds.document_indices)  # a copy: the array is a view of mds's map
    del mds
    assert len(table) == (len(docs) + 2) // 3 + 1 >= 4
    ds = tl.open_dataset(prefix)
    assert [ds[i].tolist() for i in range(len(ds))] == docs  # one sequence, one document
    ds.verify(progress=False)
    assert run_cli("verify", prefix).returncode == 0
    idx = Path(f"{prefix}.idx")
    at = 34 + 12 * len(docs) + 8 * 2  # entry 2, swapped with entry 1
    patch(idx, at - 8, struct.pack("<qq", int(table[2]), int(table[1])))
    ds = tl.open_dataset(prefix)
    assert [ds[i].tolist() for i in range(len(ds))] == docs
    with pytest.raises(tl.CorruptShardError, match="document table") as e:
        ds.verify(progress=False)
    assert e.value.path == str(idx)  # type: ignore[attr-defined]
    assert e.value.offset == at  # type: ignore[attr-defined]
    r = run_cli("verify", prefix)
    assert r.returncode == 1
    assert str(idx) in r.stderr


def test_datatrove_bad_input_names_the_file(tmp_path: Path, docs: list[list[int]]) -> None:
    ds = write_datatrove(tmp_path, "x.ds", docs)
    index, meta = Path(f"{ds}.index"), Path(f"{ds}.metadata")
    raw = index.read_bytes()
    index.write_bytes(raw[:-3])
    with pytest.raises(tl.CorruptShardError, match="truncated") as e:
        tl.open_dataset(ds)
    assert e.value.path == str(index)  # type: ignore[attr-defined]
    index.write_bytes(raw)
    tokens = ds.read_bytes()
    ds.write_bytes(tokens[:-2])
    with pytest.raises(tl.CorruptShardError, match="truncated") as e:
        tl.open_dataset(ds)
    assert e.value.path == str(ds)  # type: ignore[attr-defined]
    ds.write_bytes(tokens)
    meta.write_text("t|3\n5\n")
    with pytest.raises(tl.CorruptShardError) as e:
        tl.open_dataset(ds)
    assert e.value.path == str(meta)  # type: ignore[attr-defined]
    meta.unlink()
    ends = np.frombuffer(raw, dtype="<u8").copy()
    ends[2], ends[3] = ends[3], ends[2] - 1
    index.write_bytes(ends.tobytes())
    opened = tl.open_dataset(ds)
    with pytest.raises(tl.CorruptShardError) as e:
        [opened[i] for i in range(len(opened))]
    assert e.value.path == str(index)  # type: ignore[attr-defined]
    with pytest.raises(FileNotFoundError):
        tl.open_dataset(tmp_path / "missing.ds")
