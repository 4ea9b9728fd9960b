"""``verify`` hashes every byte: a shard of more than 20 MB (several of verify's read chunks)
damaged in its last bytes fails, the first damaged block is named by its offset, and a raw
file indexed by ``tokenloom index`` (whose only token checksum is the index header's) with one
flipped token fails too."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tokenloom as tl
from conftest import run_cli

TOKENS = 12_000_000  # 24 MB of u16


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("big") / "ds"
    rng = np.random.default_rng(3)
    tokens = rng.integers(1, 60000, size=TOKENS, dtype=np.uint16)
    with tl.DatasetWriter(root, "u16", eos_id=0, vocab_size=60000) as w:
        w.add_many_flat(tokens, np.full(TOKENS // 1000, 1000, dtype=np.uint64))
    return root


def flip(path: Path, at: int) -> None:
    with path.open("r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x5A]))


def test_a_shard_over_20_mb_is_hashed_to_its_last_byte(big: Path, tmp_path: Path) -> None:
    (shard,) = big.glob("part-*.bin")
    assert shard.stat().st_size > 20_000_000
    tl.open_dataset(big).verify(progress=False)
    flip(shard, shard.stat().st_size - 3)
    try:
        with pytest.raises(tl.CorruptShardError, match="checksum") as e:
            tl.open_dataset(big).verify(progress=False)
        assert e.value.path == str(shard)  # type: ignore[attr-defined]
        r = run_cli("verify", big)
        assert r.returncode == 1
        assert "checksum" in r.stderr
    finally:
        flip(shard, shard.stat().st_size - 3)
    tl.open_dataset(big).verify(progress=False)


BLOCK = 4 << 20  # the writer's block size (docs/format.md)


def test_verify_names_the_first_damaged_block(big: Path) -> None:
    (shard,) = big.glob("part-*.bin")
    size = shard.stat().st_size
    # Six blocks: 5 of 4 MiB and a short last one. Damage in blocks 2 and 5 (the short one).
    assert -(-size // BLOCK) == 6
    spots = [2 * BLOCK + 12_345, size - 3]
    for at in spots:
        flip(shard, at)
    try:
        with pytest.raises(tl.CorruptShardError, match=r"block 2 .*first damaged block") as e:
            tl.open_dataset(big).verify(progress=False)
        assert e.value.offset == 2 * BLOCK  # type: ignore[attr-defined]
        # Its documents (1000 tokens each, 2 bytes a token) are named too.
        first, last = 2 * BLOCK // 2000, (3 * BLOCK - 1) // 2000
        assert f"documents {first}..={last}" in str(e.value)
        flip(shard, spots[0])
        with pytest.raises(tl.CorruptShardError, match="block 5 ") as e:
            tl.open_dataset(big).verify(progress=False)
        assert e.value.offset == 5 * BLOCK  # type: ignore[attr-defined]
        r = run_cli("verify", big)
        assert r.returncode == 1
        assert str(5 * BLOCK) in r.stderr
    finally:
        flip(shard, spots[1])
    tl.open_dataset(big).verify(progress=False)


def test_a_manifest_without_block_checksums_says_so(tmp_path: Path) -> None:
    # The golden dataset's manifest was written before block checksums.
    src = Path(__file__).parent / "fixtures" / "golden" / "dataset-u16"
    root = Path(shutil.copytree(src, tmp_path / "ds"))
    assert "block_xxh3" not in (root / "manifest.json").read_text()
    tl.open_dataset(root).verify(progress=False)
    flip(root / "part-00001.g1.bin", 5)
    with pytest.raises(tl.CorruptShardError, match="records no block checksums") as e:
        tl.open_dataset(root).verify(progress=False)
    assert e.value.offset == 0  # type: ignore[attr-defined]


def test_the_index_header_checksum_guards_raw_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    tokens = rng.integers(1, 1000, size=200_000, dtype=np.uint16)
    tokens[::500] = 0
    raw = tmp_path / "train.bin"
    tokens.tofile(raw)
    r = run_cli("index", raw, "--dtype", "u16", "--eos", "0")
    assert r.returncode == 0, r.stderr
    tl.open_dataset(raw).verify(progress=False)
    flip(raw, 2 * 150_001)  # one token, not an EOS, far from the start
    with pytest.raises(tl.CorruptShardError, match="token data checksum"):
        tl.open_dataset(raw).verify(progress=False)
