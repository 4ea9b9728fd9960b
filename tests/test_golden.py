"""Golden files of every on-disk format (tests/fixtures/golden, made once by generate.py there).

Each file is read twice: as docs/format.md lays it out (struct and the reference xxh3 of the
``xxhash`` package, no tokenloom code), and through tokenloom. Both must find the numbers
written here, so a change to a format, a reader, a checksum or a fingerprint cannot pass
unnoticed: files users already have must keep opening and meaning the same.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import tokenloom as tl
import torch
import xxhash
from tokenloom import _core

GOLDEN = Path(__file__).parent / "fixtures" / "golden"

U16_DOCS = [[1, 2, 3], [4, 5, 6, 7, 8], [], [9], [10, 11, 12, 13], [14, 15], [16, 17, 18, 19, 20]]
U32_DOCS = [[70000, 1, 4294967295], [65536], [2, 3]]
# Fingerprint of dataset-u16 as order files record it.
U16_FINGERPRINT = 0xE8440899016D3B7F
# The same dataset's fingerprint since it covers document boundaries (order files version 3).
U16_BOUNDARY_FINGERPRINT = 0xFF9368B925899D9E

# Per shard: file stem, documents, tokens, offsets, tokens of the .bin, xxh3 of the .bin,
# .idx trailer (xxh3 of the rest of the .idx), xxh3 of the whole .idx (manifest).
U16_SHARDS = [
    ("part-00000.g1", 3, 8, [0, 3, 8, 8], [1, 2, 3, 4, 5, 6, 7, 8],
     0xBF0F950340224E26, 0x8387B871CCFC37B0, "a63590091533981c"),
    ("part-00001.g1", 3, 7, [0, 1, 5, 7], [9, 10, 11, 12, 13, 14, 15],
     0xA7BA084B31CB2962, 0x533A51F8CA3A5F92, "411aec9f115c0bfd"),
    ("part-00002.g1", 1, 5, [0, 5], [16, 17, 18, 19, 20],
     0x7AB4B8845999AEB0, 0xB403B4D32CC70D81, "3277ab814dbd9bf1"),
]  # fmt: skip
U32_SHARDS = [
    ("part-00000.g1", 3, 6, [0, 3, 4, 6], [70000, 1, 4294967295, 65536, 2, 3],
     0x444A8EE84FE479B9, 0x01C3C1CFA34E055C, "94dae3aef7d2a656"),
]  # fmt: skip
# Provenance sidecars of dataset-u16: runs (path, first document in the shard), rows.
U16_SOURCES = [
    ([["corpus/a.jsonl", 0]], [0, 1, 2], 0x6D0BFBE02A66FF24),
    ([["corpus/a.jsonl", 0], ["corpus/b.parquet", 1]], [5, 0, 1], 0x24F7571A10A6B82A),
    ([["corpus/b.parquet", 0]], [7], 0xC66A8A739C5AF9C2),
]
# Plan caches: file name, mode code, plan fingerprint, row starts, documents, piece starts,
# piece lengths, trailer.
PLANS = {
    "pack": (
        "pack-L4-2efc3d8f970feed2.plan", 2, 0x2EFC3D8F970FEED2,
        [0, 1, 2, 4, 6], [1, 6, 4, 3, 0, 5], [0] * 6, [5, 5, 4, 1, 3, 2], 0x152484B2A02B814B,
    ),
    "ordered": (
        "ordered-L4-a62c0cafa503aaa0.plan", 3, 0xA62C0CAFA503AAA0,
        [0, 2, 4, 6, 9], [4, 6, 6, 1, 1, 0, 0, 3, 5], [0, 0, 1, 0, 1, 0, 1, 0, 0],
        [4, 1, 4, 1, 4, 1, 2, 1, 2], 0x69DD5EFF03D55C84,
    ),
}  # fmt: skip
# The selector's memory: 6 sketch rows of 8 floats, oldest first from row `next` = 2.
SELECTOR_ROWS = [
    [0.6, -1.08, -1.15, 0.82, -1.41, -1.78, 0.35, 0.64],
    [-1.5, 0.29, -0.28, -2.46, 1.19, 0.3, 1.43, -2.03],
    [1.91, -0.0, 0.15, -1.15, 1.33, -0.62, -0.14, 0.97],
    [-0.48, -0.05, 0.39, 0.56, -0.46, -0.66, -0.33, -0.16],
    [-0.46, 0.27, -0.34, -1.26, 1.39, 0.35, 0.38, -1.63],
    [0.01, 1.4, -0.18, -3.0, -2.29, 0.41, -0.62, -1.91],
]


def xxh3(data: bytes) -> int:
    return xxhash.xxh3_64_intdigest(data)


def words(data: bytes, at: int, n: int) -> list[int]:
    return list(struct.unpack_from(f"<{n}Q", data, at))


@pytest.fixture
def golden(tmp_path: Path) -> Path:
    """A copy of the fixtures: the loader may write plan caches next to a dataset."""
    return Path(shutil.copytree(GOLDEN, tmp_path / "golden"))


# -- shards, version 1 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "code", "fmt", "shards"),
    [("dataset-u16", 1, "H", U16_SHARDS), ("dataset-u32", 2, "I", U32_SHARDS)],
)
def test_shard_files_hold_the_documented_layout(
    name: str, code: int, fmt: str, shards: list[tuple]
) -> None:
    for stem, docs, tokens, offsets, values, bin_sum, trailer, _ in shards:
        idx = (GOLDEN / name / f"{stem}.idx").read_bytes()
        bin_ = (GOLDEN / name / f"{stem}.bin").read_bytes()
        assert len(idx) == 48 + 8 * (docs + 1) + 8
        assert struct.unpack_from("<8sII", idx) == (b"TLOOMIDX", 1, code)
        assert words(idx, 16, 4) == [docs, tokens, 0, bin_sum]
        assert words(idx, 48, docs + 1) == offsets
        assert words(idx, len(idx) - 8, 1) == [trailer] == [xxh3(idx[:-8])]
        assert list(struct.unpack(f"<{tokens}{fmt}", bin_)) == values
        assert xxh3(bin_) == bin_sum


@pytest.mark.parametrize(
    ("name", "fields", "checksum"),
    [
        ("dataset-u16", ["u16", 0, 1000, "golden:u16", 7, 20], "6c6d4a06e7a80fd3"),
        ("dataset-u32", ["u32", None, None, None, 3, 6], "ef014e547df52f4f"),
    ],
)
def test_manifest_holds_the_documented_fields_and_checksum(
    name: str, fields: list[object], checksum: str
) -> None:
    manifest = json.loads((GOLDEN / name / "manifest.json").read_text())
    shards = U16_SHARDS if name == "dataset-u16" else U32_SHARDS
    keys = ("dtype", "eos_id", "vocab_size", "tokenizer", "num_docs", "num_tokens")
    assert [manifest[k] for k in keys] == fields
    assert list(manifest) == [
        "format", "version", "generation", "dtype", "eos_id", "vocab_size", "tokenizer",
        "num_docs", "num_tokens", "shards", "checksum",
    ]  # fmt: skip
    assert manifest["format"] == "tokenloom.dataset"
    assert (manifest["version"], manifest["generation"]) == (1, 1)
    assert manifest["shards"] == [
        {
            "bin": f"{stem}.bin",
            "idx": f"{stem}.idx",
            "num_docs": docs,
            "num_tokens": tokens,
            "bin_xxh3": f"{bin_sum:016x}",
            "idx_xxh3": idx_sum,
        }
        for stem, docs, tokens, _, _, bin_sum, _, idx_sum in shards
    ]
    for stem, *_, idx_sum in shards:
        assert f"{xxh3((GOLDEN / name / f'{stem}.idx').read_bytes()):016x}" == idx_sum
    # The checksum: xxh3 of the compact JSON of every other field, in this order.
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    compact = json.dumps(body, separators=(",", ":")).encode()
    assert manifest["checksum"] == checksum == f"{xxh3(compact):016x}"


def test_provenance_sidecars_hold_the_documented_layout() -> None:
    for (stem, *_), (runs, rows, trailer) in zip(U16_SHARDS, U16_SOURCES, strict=True):
        src = (GOLDEN / "dataset-u16" / f"{stem}.src").read_bytes()
        assert struct.unpack_from("<8sII", src) == (b"TLOOMSRC", 1, 0)
        n, j = words(src, 16, 2)
        assert n == len(rows)
        assert json.loads(src[32 : 32 + j]) == runs
        at = 32 + -(-j // 8) * 8
        assert src[32 + j : at] == b"\0" * (at - 32 - j)
        assert words(src, at, n) == rows
        assert len(src) == at + 8 * n + 8
        assert words(src, len(src) - 8, 1) == [trailer] == [xxh3(src[:-8])]


def test_datasets_open_read_and_verify(golden: Path) -> None:
    ds = tl.open_dataset(golden / "dataset-u16")
    assert [ds[i].tolist() for i in range(len(ds))] == U16_DOCS
    assert ds[0].dtype == np.uint16
    assert (ds.eos_id, ds.vocab_size, ds.tokenizer) == (0, 1000, "golden:u16")
    assert (ds.num_shards, ds.num_tokens) == (3, 20)
    assert ds.doc_lengths().tolist() == [3, 5, 0, 1, 4, 2, 5]
    assert [ds.source(i) for i in range(len(ds))] == [
        ("corpus/a.jsonl", 0), ("corpus/a.jsonl", 1), ("corpus/a.jsonl", 2),
        ("corpus/a.jsonl", 5), ("corpus/b.parquet", 0), ("corpus/b.parquet", 1),
        ("corpus/b.parquet", 7),
    ]  # fmt: skip
    report = ds.verify(check_vocab=True, progress=False)
    assert report == {"shards": 3, "documents": 7, "tokens": 20, "bytes": 40, "sources": 3}

    ds32 = tl.open_dataset(golden / "dataset-u32")
    assert [ds32[i].tolist() for i in range(len(ds32))] == U32_DOCS
    assert ds32[0].dtype == np.uint32
    assert (ds32.eos_id, ds32.vocab_size, ds32.tokenizer) == (None, None, None)
    assert ds32.verify(progress=False)["tokens"] == 6


def test_writer_reproduces_the_golden_shards_byte_for_byte(tmp_path: Path) -> None:
    # The current writer still writes version 1 exactly: same tokens, same bytes.
    for name, docs, kw in (
        ("dataset-u16", U16_DOCS,
         {"dtype": "u16", "eos_id": 0, "vocab_size": 1000, "tokenizer": "golden:u16",
          "shard_bytes": 16}),
        ("dataset-u32", U32_DOCS, {"dtype": "u32"}),
    ):  # fmt: skip
        with tl.DatasetWriter(tmp_path / name, **kw) as w:  # type: ignore[arg-type]
            for d in docs:
                w.add(np.asarray(d, dtype=np.int64))
        if name == "dataset-u16":
            runs = [("corpus/a.jsonl", 0), ("corpus/b.parquet", 4)]
            _core.write_sources(tmp_path / name, runs, np.asarray([0, 1, 2, 5, 0, 1, 7], np.uint64))
        files = sorted(p.name for p in (GOLDEN / name).iterdir() if p.is_file())
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == files
        for f in files:
            if f != "manifest.json":
                assert (tmp_path / name / f).read_bytes() == (GOLDEN / name / f).read_bytes(), f
        # The manifest adds the block checksums (one 4 MiB block per shard here) to the golden
        # one's fields; without them it is the golden manifest.
        new = json.loads((tmp_path / name / "manifest.json").read_text())
        old = json.loads((GOLDEN / name / "manifest.json").read_text())
        body = {k: v for k, v in new.items() if k != "checksum"}
        assert new["checksum"] == f"{xxh3(json.dumps(body, separators=(',', ':')).encode()):016x}"
        for s in new["shards"]:
            data = (tmp_path / name / s["bin"]).read_bytes()
            assert list(s)[-2:] == ["block_bytes", "block_xxh3"]
            assert s.pop("block_bytes") == 4 << 20
            assert s.pop("block_xxh3") == f"{xxh3(data):016x}"
        assert {k: v for k, v in new.items() if k != "checksum"} == {
            k: v for k, v in old.items() if k != "checksum"
        }


# -- order files, versions 1 and 2 -----------------------------------------------------------

# name: (version, flags, ids, context starts, metadata bytes, file size, trailer)
ORDERS = {
    "order-v1.order": (1, 0, [4, 2, 0, 6, 1], [0, 3, 5], 0, 120, 0xD38283100DDC9D31),
    "order-v2.order": (2, 0, [4, 2, 0, 6, 1], [0, 3, 5], 0, 128, 0x45DEADD660EAE578),
    "dataset-u16/orders/iclm.order": (
        2, 1, [4, 6, 1, 0, 3, 5], [0, 4, 6], 793, 936, 0x2BE75775C99FF37A,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(ORDERS))
def test_order_files_hold_the_documented_layout(name: str) -> None:
    version, flags, ids, starts, m, size, trailer = ORDERS[name]
    data = (GOLDEN / name).read_bytes()
    assert len(data) == size
    assert struct.unpack_from("<8sII", data) == (b"TLOOMORD", version, flags)
    assert words(data, 16, 4) == [U16_FINGERPRINT, 7, len(ids), len(starts) - 1]
    at = 48 if version == 1 else 56 + -(-words(data, 48, 1)[0] // 8) * 8
    if version == 2:
        assert words(data, 48, 1) == [m]
    assert words(data, at, len(ids)) == ids
    assert words(data, at + 8 * len(ids), len(starts)) == starts
    assert words(data, size - 8, 1) == [trailer] == [xxh3(data[:-8])]


def test_order_file_v3_holds_u32_ids() -> None:
    # Flags bit 1 (ids32): ids and context starts are u32, each array padded to 8 bytes.
    data = (GOLDEN / "order-v3.order").read_bytes()
    assert len(data) == 104
    assert struct.unpack_from("<8sII", data) == (b"TLOOMORD", 3, 2)
    assert words(data, 16, 5) == [U16_BOUNDARY_FINGERPRINT, 7, 5, 2, 0]
    assert list(struct.unpack_from("<5I", data, 56)) == [4, 2, 0, 6, 1]
    assert data[76:80] == bytes(4)
    assert list(struct.unpack_from("<3I", data, 80)) == [0, 3, 5]
    assert words(data, 96, 1) == [0xA8C2633A5B628307] == [xxh3(data[:-8])]


def test_stored_order_opens_with_its_report(golden: Path) -> None:
    report = tl.order_report(golden / "dataset-u16", "iclm")
    assert report["docs_in_order"] == [4, 6, 1, 0, 3, 5]
    assert report["segment_starts"] == [0, 4, 6]
    assert (report["docs"], report["ordered"], report["empty"], report["segments"]) == (7, 6, 1, 2)
    settings = report["settings"]
    assert (settings["method"], settings["k"], settings["seq_len"], settings["variant"]) == (
        "iclm", 2, 4, "paper",
    )  # fmt: skip


# Batches of the ordered loader (seq_len 4, 2 rows, path order): input ids and labels.
UNFLOWED = [
    ([[10, 11, 12, 13], [2, 3, 0, 0]], [[11, 12, 13, 1], [3, -100, -100, -100]]),
    ([[16, 17, 18, 19], [4, 5, 6, 7]], [[17, 18, 19, 20], [5, 6, 7, 8]]),
]
FLOWED = [
    ([[10, 11, 12, 13], [17, 18, 19, 20]], [[11, 12, 13, 16], [18, 19, 20, 4]]),
    ([[5, 6, 7, 8], [2, 3, 9, 14]], [[6, 7, 8, 1], [3, 9, 14, 15]]),
]


@pytest.mark.parametrize(
    ("name", "batches"),
    [
        ("order-v1.order", UNFLOWED),
        ("order-v2.order", UNFLOWED),
        ("order-v3.order", UNFLOWED),
        ("iclm", FLOWED),
    ],
)
def test_order_files_drive_the_loader(golden: Path, name: str, batches: list[tuple]) -> None:
    # Each context starts a row (the last one padded) unless the file says the contexts flow.
    order = name if name == "iclm" else golden / name
    ds = tl.TokenDataset(
        golden / "dataset-u16", 4, 2, order=order, shuffle=False, output="numpy",
        cache_plans=False,
    )  # fmt: skip
    got = [(b["input_ids"].tolist(), b["labels"].tolist()) for b in ds]
    assert got == batches


# -- plan caches, version 1 ------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(PLANS))
def test_plan_caches_hold_the_documented_layout(mode: str) -> None:
    name, code, fingerprint, rows, docs, starts, lengths, trailer = PLANS[mode]
    data = (GOLDEN / "dataset-u16" / ".plans" / name).read_bytes()
    r, p = len(rows) - 1, len(docs)
    assert len(data) == 8 * (7 + r + 1 + 3 * p + 1)
    assert data[:8] == b"TLOOMPLN"
    assert words(data, 8, 6) == [1, code, 4, fingerprint, r, p]
    assert words(data, 56, r + 1 + 3 * p) == rows + docs + starts + lengths
    assert words(data, len(data) - 8, 1) == [trailer] == [xxh3(data[:-8])]


# Samples of the plans (ignore_index -100), row by row: input ids, labels, document ids.
PLAN_SAMPLES = {
    "pack": (
        [[4, 5, 6, 7], [16, 17, 18, 19], [10, 11, 12, 13], [1, 2, 3, 14]],
        [[5, 6, 7, 8], [17, 18, 19, 20], [11, 12, 13, -100], [2, 3, -100, 15]],
        [[1, 1, 1, 1], [6, 6, 6, 6], [4, 4, 4, 4], [0, 0, 0, 5]],
    ),
    "ordered": (
        [[10, 11, 12, 13], [17, 18, 19, 20], [5, 6, 7, 8], [2, 3, 9, 14]],
        [[11, 12, 13, -100], [18, 19, 20, -100], [6, 7, 8, -100], [3, -100, -100, 15]],
        [[4, 4, 4, 4], [6, 6, 6, 6], [1, 1, 1, 1], [0, 0, 3, 5]],
    ),
}


@pytest.mark.parametrize("mode", list(PLANS))
def test_plan_caches_of_the_legacy_fingerprint_are_rebuilt(golden: Path, mode: str) -> None:
    # The golden plans are keyed by the fingerprint that did not cover document boundaries. A
    # cache cannot tell a dataset rewritten with other boundaries from the one it was made for,
    # so it is not used: a new plan is built beside it, and the stream is the same.
    plans = golden / "dataset-u16" / ".plans"
    before = {p.name: p.read_bytes() for p in plans.iterdir()}
    ds = tl.TokenDataset(
        golden / "dataset-u16", 4, 4, mode=mode, order="iclm" if mode == "ordered" else None,
        shuffle=False, ignore_index=-100, output="numpy",
    )  # fmt: skip
    (batch,) = list(ds)
    got = (batch["input_ids"].tolist(), batch["labels"].tolist(), batch["doc_ids"].tolist())
    assert got == PLAN_SAMPLES[mode]
    after = {p.name: p.read_bytes() for p in plans.iterdir()}
    assert {k: after[k] for k in before} == before
    (new,) = set(after) - set(before)
    assert new.startswith(f"{mode}-L4-")
    assert new != PLANS[mode][0]


# -- selector and loader states, version 1 ---------------------------------------------------


def test_selector_state_resumes_the_selection() -> None:
    state = torch.load(GOLDEN / "selector-state-v1.pt", weights_only=True)
    assert {k: v for k, v in state.items() if k not in ("rows", "stats")} == {
        "version": 1, "rule": "uds-scaled", "keep": 2, "buffer_size": 6, "sketch": (2, 4),
        "alpha": 0.5, "seed": 7, "max_len": 512, "next": 2, "count": 6, "steps": 4,
    }  # fmt: skip
    np.testing.assert_allclose(state["rows"].numpy().reshape(6, 8), SELECTOR_ROWS, atol=1e-6)
    # Running statistics (count, mean, sum of squared deviations) of utility and diversity.
    (nu, mu, su), (nd, md, sd) = state["stats"]
    assert (nu, nd) == (16, 12)
    np.testing.assert_allclose([mu, su, md, sd], [0.44417468, 0.97270322, 3.94441777, 5.64653870])

    sel = tl.BatchSelector(
        keep=2, buffer_size=6, sketch=(2, 4), seed=7, alpha=0.5, rule="uds-scaled"
    )
    sel.load_state_dict(state)
    again = sel.state_dict()
    assert (again["next"], again["count"], again["steps"]) == (2, 6, 4)
    np.testing.assert_array_equal(np.asarray(again["rows"]), state["rows"].numpy())
    utility = np.array([0.5, 0.1, 0.9, 0.3], np.float32)
    sketches = np.zeros((4, 8), np.float32)
    sketches[0, 0], sketches[1, 1], sketches[2, 2], sketches[2, 7], sketches[3, 0] = 1, 2, -1, 1, 3
    # With the restored memory the pick differs from a fresh selector's ([2, 0]).
    assert sel.select_from(utility, sketches).tolist() == [2, 3]


def test_loader_state_resumes_the_stream(golden: Path) -> None:
    state = json.loads((GOLDEN / "loader-state-v1.json").read_text())
    assert state == {
        "version": 1, "fingerprint": "b97df37566f26f2a", "epoch": 1, "position": 2, "counts": [6],
    }  # fmt: skip
    ds = tl.TokenDataset(golden / "dataset-u16", 4, 2, seed=4, output="numpy", cache_plans=False)
    # Saved before the fingerprint covered document boundaries: accepted by its legacy one.
    assert ds.fingerprint != "b97df37566f26f2a"
    ds.load_state_dict(state)
    got = [(b["input_ids"].tolist(), b["sample_ids"].tolist()) for b in ds]
    # Epoch 1 visits the four windows as 2 3 | 1 0: after its first batch comes 1 0.
    assert got == [([[5, 6, 7, 8], [1, 2, 3, 4]], [1, 0])]


# -- compressed shards (compression="zstd") --------------------------------------------------


def test_compressed_shards_are_zstd_frames_of_the_plain_ones(golden: Path) -> None:
    import zstandard

    manifest = json.loads((GOLDEN / "dataset-zstd" / "manifest.json").read_text())
    assert manifest["compression"] == "zstd"
    plain = json.loads((GOLDEN / "dataset-u16" / "manifest.json").read_text())
    for s, p in zip(manifest["shards"], plain["shards"], strict=True):
        # The manifest names and checks the tokens as read, not the stored frame.
        assert s["bin"] == p["bin"]
        assert s["bin_xxh3"] == p["bin_xxh3"]
        frame = (GOLDEN / "dataset-zstd" / f"{s['bin']}.zst").read_bytes()
        assert frame[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
        assert (
            zstandard.ZstdDecompressor().decompressobj().decompress(frame)
            == (GOLDEN / "dataset-u16" / p["bin"]).read_bytes()
        )
        assert (GOLDEN / "dataset-zstd" / s["idx"]).read_bytes() == (
            GOLDEN / "dataset-u16" / p["idx"]
        ).read_bytes()
    ds = tl.open_dataset(golden / "dataset-zstd")
    assert [ds[i].tolist() for i in range(len(ds))] == [
        [1, 2, 3], [4, 5, 6, 7, 8], [], [9], [10, 11, 12, 13], [14, 15], [16, 17, 18, 19, 20]
    ]  # fmt: skip
