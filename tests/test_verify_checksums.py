"""``verify`` hashes every byte: a shard of more than 20 MB (several of verify's read chunks)
damaged in its last bytes fails, and a raw file indexed by ``tokenloom index`` (whose only
token checksum is the index header's) with one flipped token fails too."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
import tokenloom as tl
from conftest import run_cli

if TYPE_CHECKING:
    from pathlib import Path

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
        with pytest.raises(tl.CorruptShardError, match="token data checksum") as e:
            tl.open_dataset(big).verify(progress=False)
        assert e.value.path == str(shard)  # type: ignore[attr-defined]
        r = run_cli("verify", big)
        assert r.returncode == 1
        assert "checksum" in r.stderr
    finally:
        flip(shard, shard.stat().st_size - 3)
    tl.open_dataset(big).verify(progress=False)


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
