"""Remote datasets against a real S3-compatible server (moto's server mode on loopback,
started here) behind a fault-injecting proxy: the stream and resumption equal the local
data's, shards are fetched once per node, transfers survive throttling and dropped
connections, and bad input fails with an error naming the object."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import tokenloom as tl

if TYPE_CHECKING:
    from collections.abc import Iterator

pytest.importorskip("moto.server")
from s3_server import S3Server

BUCKET = "tokenloom-test"
DOC_LENS = [37, 5, 120, 64, 1, 90, 33, 250, 7, 48, 130, 12, 75, 200, 3, 66] * 4


@pytest.fixture(scope="module")
def server() -> Iterator[S3Server]:
    s = S3Server()
    s.make_bucket(BUCKET)
    yield s
    s.stop()


@pytest.fixture
def env(server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    for k in list(os.environ):
        if k.startswith(("AWS_", "GOOGLE_", "AZURE_", "TOKENLOOM_")):
            monkeypatch.delenv(k)
    values = {**server.env(), "TOKENLOOM_CACHE_DIR": str(tmp_path / "cache")}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    server.faults.throttle = server.faults.drop = 0
    server.faults.match = ""
    return values


def docs() -> list[np.ndarray]:
    # Zipf-distributed ids, as in tokenized text (a few ids are most of it): compressible.
    rng = np.random.default_rng(7)
    return [np.minimum(rng.zipf(1.3, n), 49_999).astype(np.uint16) for n in DOC_LENS]


def write_local(path: Path, **kw: Any) -> None:
    with tl.DatasetWriter(path, eos_id=0, vocab_size=50_257, shard_bytes=1500, **kw) as w:
        for d in docs():
            w.add(d)


def url(name: str) -> str:
    return f"s3://{BUCKET}/{name}"


def write_remote(name: str, **kw: Any) -> str:
    with tl.DatasetWriter(url(name), eos_id=0, vocab_size=50_257, shard_bytes=1500, **kw) as w:
        for d in docs():
            w.add(d)
    return url(name)


def batches(ds: Any, n: int | None = None) -> list[dict[str, np.ndarray]]:
    out = []
    for b in ds:
        out.append({k: np.asarray(v).copy() for k, v in b.items()})
        if n is not None and len(out) == n:
            break
    return out


def read_every_doc(ds: Any) -> int:
    return sum(ds[i].size for i in range(len(ds)))


def assert_same(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=False):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("mode", ["concat", "pack"])
def test_remote_stream_and_resume_equal_local(env: dict[str, str], tmp_path: Path, mode: str):
    local = tmp_path / "local"
    write_local(local)
    remote = write_remote(f"stream-{mode}")
    # Two concat windows of 32 tokens read at most four shards; two packed rows, pieces of up
    # to six. The cache holds the manifest, the indexes and that many bodies of the seven, so
    # bodies are evicted and fetched again.
    kw: dict[str, Any] = dict(seq_len=32, batch_size=2, mode=mode, seed=3, output="numpy")
    ref = batches(tl.TokenDataset(str(local), **kw))
    meta = sum(p.stat().st_size for p in local.iterdir() if p.is_file() and p.suffix != ".bin")
    bodies = [p.stat().st_size for p in local.glob("*.bin")]
    limit = meta + 256 + {"concat": 4, "pack": 6}[mode] * max(bodies)
    assert limit - meta < sum(bodies)
    small = {"cache_dir": str(tmp_path / "small"), "cache_limit": limit}

    def small_cache() -> Any:
        # Shuffled, and the shards do not fit: the user is told that they will be fetched
        # again and again (and how to avoid it); the stream stays exact.
        need = sum(p.stat().st_size for p in local.iterdir() if p.is_file())
        message = rf"take {need} bytes .* cache_limit={limit} bytes .* does not hold them"
        with pytest.warns(UserWarning, match=message):
            return tl.TokenDataset(remote, **kw, **small)

    got = batches(small_cache())
    assert_same(ref, got)
    # Resume after 5 batches, in a new dataset object (a restarted job), remote and local alike;
    # the first object stays alive (what it holds for its next batches gives way).
    ds = small_cache()
    head = batches(ds, 5)
    state = ds.state_dict()
    again = small_cache()
    again.load_state_dict(state)
    local_again = tl.TokenDataset(str(local), **kw)
    local_again.load_state_dict(state)  # the same fingerprint: same data, same plan
    assert_same(head + batches(again), ref)
    assert_same(batches(local_again), ref[5:])
    used = sum(p.stat().st_size for p in Path(small["cache_dir"]).rglob("*") if p.is_file())
    assert used <= limit
    # In order, a small cache is what the design expects: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tl.TokenDataset(remote, **{**kw, "shuffle": False}, **small)


def test_a_windowed_shuffle_reads_a_dataset_larger_than_the_cache(
    env: dict[str, str], tmp_path: Path, server: S3Server
):
    """A shuffled read of a dataset several times larger than the cache, in windows that fit
    it: the stream equals the same windowed read of the local copy, nothing warns, and each
    shard is fetched a few times per epoch, not once per batch."""
    rng = np.random.default_rng(5)
    many = [rng.integers(1, 50_000, 100, dtype=np.uint16) for _ in range(1000)]
    local = tmp_path / "local-many"
    for dest in (str(local), url("windowed")):
        with tl.DatasetWriter(dest, eos_id=0, vocab_size=50_257, shard_bytes=1500) as w:
            for d in many:
                w.add(d)
    bodies = [p.stat().st_size for p in local.glob("*.bin")]
    meta = sum(p.stat().st_size for p in local.iterdir() if p.is_file() and p.suffix != ".bin")
    limit = meta + 40 * max(bodies)  # 40 of the dataset's shards
    assert len(bodies) > 3 * 40
    # Samples of 32 tokens: a shard holds about 23, a block of the window 23 (368 / 16).
    kw: dict[str, Any] = dict(seq_len=32, batch_size=4, seed=1, shuffle_window=368, output="numpy")
    ref = batches(tl.TokenDataset(str(local), **kw))
    before = server.faults.gets(".bin")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = tl.TokenDataset(
            url("windowed"), **kw, cache_dir=str(tmp_path / "small"), cache_limit=limit
        )
    assert_same(batches(ds), ref)
    fetched = server.faults.gets(".bin") - before
    assert len(bodies) <= fetched <= 3 * len(bodies), (fetched, len(bodies), len(ref))


def test_open_dataset_documents_and_mixing(env: dict[str, str], tmp_path: Path):
    remote = write_remote("docs")
    ds = tl.open_dataset(remote)
    assert ds.is_remote
    assert ds.path == remote
    assert len(ds) == len(DOC_LENS)
    for i, d in enumerate(docs()):
        np.testing.assert_array_equal(ds[i], d)
    local = tmp_path / "local"
    write_local(local)
    kw: dict[str, Any] = dict(seq_len=16, batch_size=3, seed=1, output="numpy")
    mixed = batches(tl.TokenDataset([(remote, 1.0), (str(local), 2.0)], **kw))
    ref = batches(tl.TokenDataset([(str(local), 1.0), (str(local), 2.0)], **kw))
    assert_same(mixed, ref)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys; sys.modules['torch'] = None; from tokenloom.cli import main; sys.exit(main())"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


def test_cli_inspect_verify_convert(env: dict[str, str], tmp_path: Path):
    remote = write_remote("cli")
    out = cli("inspect", remote, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["num_docs"] == len(DOC_LENS)
    out = cli("verify", remote)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok:"), out.stdout
    # convert to another URL, compressed; it reads back the same documents
    out = cli("convert", remote, url("cli-zstd"), "--to", "tokenloom", "--compression", "zstd")
    assert out.returncode == 0, out.stderr
    zst = tl.open_dataset(url("cli-zstd"))
    for i, d in enumerate(docs()):
        np.testing.assert_array_equal(zst[i], d)
    out = cli("convert", remote, url("cli-zstd"), "--to", "tokenloom")
    assert out.returncode != 0
    assert "already exists" in out.stderr


def test_compressed_shards_round_trip(env: dict[str, str], tmp_path: Path, server: S3Server):
    local = tmp_path / "z"
    write_local(local, compression="zstd")
    stored = sorted(p.name for p in local.iterdir() if p.name.startswith("part-"))
    assert stored, stored
    assert all(n.endswith((".bin.zst", ".idx")) for n in stored), stored
    raw = sum(len(d) * 2 for d in docs())
    assert sum((local / n).stat().st_size for n in stored if n.endswith(".zst")) < raw
    ds = tl.open_dataset(local)  # decompressed once into the cache, then mapped
    for i, d in enumerate(docs()):
        np.testing.assert_array_equal(ds[i], d)
    remote = write_remote("zstd", compression="zstd")
    kw: dict[str, Any] = dict(seq_len=32, batch_size=4, seed=3, output="numpy")
    plain = tmp_path / "plain"
    write_local(plain)
    assert_same(batches(tl.TokenDataset(remote, **kw)), batches(tl.TokenDataset(str(plain), **kw)))
    assert server.faults.gets(".bin.zst") > 0


READ_ALL = """
import sys
sys.modules["torch"] = None
import tokenloom as tl
ds = tl.open_dataset(sys.argv[1])
print(sum(int(ds[i].sum()) for i in range(len(ds))))
"""


def test_processes_share_one_cache_and_download_once(
    env: dict[str, str], tmp_path: Path, server: S3Server
):
    remote = write_remote("shared")
    before = server.faults.gets(".bin")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", READ_ALL, remote], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 1
    assert int(outs[0]) == sum(int(d.sum()) for d in docs())
    shards = tl.open_dataset(remote).num_shards
    assert server.faults.gets(".bin") - before == shards  # each body fetched once


def test_throttling_and_dropped_connections_are_retried(
    env: dict[str, str], tmp_path: Path, server: S3Server
):
    remote = write_remote("faults")
    server.faults.match = "/faults/part-"
    server.faults.throttle = 3
    ds = tl.open_dataset(remote)
    np.testing.assert_array_equal(ds[0], docs()[0])
    assert server.faults.throttle == 0
    server.faults.match = "/faults/part-00003"
    server.faults.drop = 2
    n3 = sum(1 for i in range(len(ds)) if ds[i].size >= 0)  # reads every shard
    assert n3 == len(DOC_LENS)
    assert server.faults.drop == 0
    for i, d in enumerate(docs()):
        np.testing.assert_array_equal(ds[i], d)
    assert tl.open_dataset(remote).verify(progress=False)["documents"] == len(DOC_LENS)


def test_corrupt_cached_body_is_fetched_again(env: dict[str, str], server: S3Server):
    remote = write_remote("corrupt-cache")
    ds = tl.open_dataset(remote)
    np.testing.assert_array_equal(ds[0], docs()[0])
    body = sorted(Path(ds.root).glob("part-00000.*.bin"))[0]
    data = bytearray(body.read_bytes())
    data[3] ^= 0xFF
    body.write_bytes(bytes(data))
    before = server.faults.gets(body.name)
    fresh = tl.open_dataset(remote)  # a new process would do the same: check, then refetch
    np.testing.assert_array_equal(fresh[0], docs()[0])
    assert server.faults.gets(body.name) == before + 1


def test_a_checked_body_is_trusted_while_unchanged_and_verify_still_hashes_it(
    env: dict[str, str], server: S3Server
):
    """A body checked once is not hashed again by the next dataset object or process while
    its file is unchanged (same inode, size and modification time): with a large cache that
    hash costs minutes per process. Damage that keeps the metadata (a media error) is then
    served as stored, and ``verify`` is what finds it."""
    remote = write_remote("checked-stamp")
    ds = tl.open_dataset(remote)
    want = docs()[0]
    np.testing.assert_array_equal(ds[0], want)
    body = sorted(Path(ds.root).glob("part-00000.*.bin"))[0]
    time.sleep(0.05)  # file times are coarse: a stamp counts once it is newer than the body
    np.testing.assert_array_equal(tl.open_dataset(remote)[0], want)  # checked again, stamped
    meta = body.stat()
    data = bytearray(body.read_bytes())
    data[0] ^= 0xFF
    with body.open("r+b") as f:  # in place: same inode and size
        f.write(bytes(data[:1]))
    os.utime(body, ns=(meta.st_atime_ns, meta.st_mtime_ns))
    before = server.faults.gets(body.name)
    trusted = tl.open_dataset(remote)
    assert np.asarray(trusted[0])[0] == want[0] ^ 0xFF  # served as stored, not hashed again
    assert server.faults.gets(body.name) == before
    with pytest.raises(tl.CorruptShardError, match=r"part-00000.*first damaged block at byte 0"):
        tl.open_dataset(remote).verify(progress=False)


def test_a_reader_dropped_mid_download_releases_the_gil(env: dict[str, str], server: S3Server):
    """Dropping an iterator stops its batch threads, which may be waiting on a download. The
    server here answers from threads of this process, as any Python code may need to while a
    training loop drops a loader: the drop must wait for the downloads (a second here), not
    hold the GIL until the transfers time out (1.0 s here, against 241 s before the fix)."""
    remote = write_remote("drop-mid-download")
    ds = tl.TokenDataset(remote, seq_len=32, batch_size=16, shuffle=False, output="numpy")
    it = iter(ds)
    next(it)
    server.faults.match = ".bin"
    server.faults.delay = 1.0
    time.sleep(0.3)  # the next shards' transfers are under way, each answered after 1 s
    t0 = time.monotonic()
    del it
    gc.collect()
    waited = time.monotonic() - t0
    server.faults.delay = 0.0
    assert waited < 10, f"dropping the reader took {waited:.1f} s"


def test_bad_input_names_the_object(env: dict[str, str], server: S3Server, monkeypatch):
    with pytest.raises(ValueError, match=r"ftp://.*not supported"):
        tl.open_dataset("ftp://host/data")
    with pytest.raises(FileNotFoundError, match=r"s3://no-such-bucket/ds/manifest\.json"):
        tl.open_dataset("s3://no-such-bucket/ds")
    remote = write_remote("changed")
    ds = tl.open_dataset(remote)
    assert ds.summary()["documents"] == len(DOC_LENS)  # manifest and indexes are in
    key = "changed/part-00001.g1.bin"
    body = server.get_object(BUCKET, key)
    server.put_object(BUCKET, key, bytes(b ^ 1 for b in body))  # same size, other bytes
    with pytest.raises(tl.CorruptShardError, match=f"s3://{BUCKET}/{key}.*does not match"):
        read_every_doc(ds)
    server.put_object(BUCKET, key, body[:-2])  # another size
    with pytest.raises(tl.CorruptShardError, match=f"s3://{BUCKET}/{key}: the object holds"):
        tl.open_dataset(remote, cache_dir=env["TOKENLOOM_CACHE_DIR"] + "2").verify(progress=False)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("TOKENLOOM_MAX_RETRIES", "0")
    monkeypatch.setenv("TOKENLOOM_RETRY_TIMEOUT", "1")
    with pytest.raises(OSError, match=r"manifest.json.*credentials"):
        tl.open_dataset(url("docs"), cache_dir=env["TOKENLOOM_CACHE_DIR"] + "3")


def test_manifest_is_uploaded_last(env: dict[str, str], server: S3Server):
    start = len(server.faults.log)
    write_remote("atomic")
    puts = [p for m, p in server.faults.log[start:] if m in ("PUT", "POST") and "/atomic/" in p]
    assert puts
    assert puts[-1].split("?")[0].endswith("/atomic/manifest.json")
    with pytest.raises(FileExistsError):
        write_remote("atomic")
    # an overwrite: the new generation's objects first, the old ones deleted after the commit
    write_remote("atomic", overwrite=True)
    ds = tl.open_dataset(url("atomic"))
    assert len(ds) == len(DOC_LENS)


FULL = """
import json, resource, signal, sys
sys.modules["torch"] = None
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
import tokenloom as tl
ds = tl.open_dataset(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))
try:
    ds[0]
    print(json.dumps(None))
except Exception as e:
    print(json.dumps({"type": type(e).__name__, "message": str(e)}))
"""


def test_cache_on_a_full_disk_fails_cleanly(env: dict[str, str], tmp_path: Path):
    remote = write_remote("full")
    out = subprocess.run(
        [sys.executable, "-c", FULL, remote], capture_output=True, text=True, timeout=120
    )
    err = json.loads(out.stdout.strip().splitlines()[-1])
    assert err is not None, out
    assert err["type"] in ("OSError", "FileTooLargeError"), out
    assert "part-00000" in err["message"], err
    cache = Path(env["TOKENLOOM_CACHE_DIR"])
    assert not list(cache.rglob("*.bin"))
    assert not list(cache.rglob(".tmp.*"))
    ds = tl.open_dataset(remote)  # with room again, the same cache works
    np.testing.assert_array_equal(ds[0], docs()[0])
