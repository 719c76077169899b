"""Object storage through a local S3 stand-in (moto's server mode): pack to and from ``s3://``, read by ranges.

Needs ``moto[server]`` and ``s3fs`` (``pip install 'aezip[s3-test]'``); skipped without them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

import aezip
from aezip.cli.app import main
from tests.conftest import photo_like

pytest.importorskip("flask")  # moto's server mode
moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")

BUCKET = "aezip-test"
IMAGES = 30
PER_SHARD = 10


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A moto S3 server on a free local port with one bucket; the storage options that reach it."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"key": "testing", "secret": "testing", "endpoint_url": f"http://{host}:{port}"}
    s3fs.S3FileSystem(**options, skip_instance_cache=True).mkdir(BUCKET)
    try:
        yield options
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("src")
    for i in range(IMAGES):
        path = root / f"class{i % 3}" / f"{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(photo_like(12, 12 + i % 4, i)).save(path)
    (root / "labels.csv").write_text("".join(f"{i},{i % 3}\n" for i in range(IMAGES)))
    return root


def _cli(*args: str, options: dict[str, str]) -> str:
    flags = [x for key, value in options.items() for x in ("--storage-option", f"{key}={value}")]
    result = CliRunner().invoke(main, [*args, *flags])
    assert result.exit_code == 0, result.output
    return result.output


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_pack_to_s3_and_read_by_ranges(
    s3: dict[str, str], tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "local"
    _cli("pack", str(tree), str(local), "--shard-images", str(PER_SHARD), "--device", "cpu", options={})
    url = f"s3://{BUCKET}/ds"
    shards = ("--shard-images", str(PER_SHARD), "--device", "cpu", "--jobs", "2", "--json")
    packed = json.loads(_cli("pack", str(tree), url, *shards, options=s3))
    assert packed["shards"] == 4 and len(packed["written"]) == 4
    fs = s3fs.S3FileSystem(**s3, skip_instance_cache=True)
    stored = {p.rsplit("/", 1)[-1]: fs.cat_file(p) for p in fs.ls(f"{BUCKET}/ds", detail=False)}
    assert stored == _files(local)  # the same bytes as a local pack; no journal or temporary objects left

    fetched: list[tuple[str, int]] = []
    original = s3fs.S3FileSystem._cat_file

    async def counting(self, path, version_id=None, start=None, end=None):  # type: ignore[no-untyped-def]
        data = await original(self, path, version_id=version_id, start=start, end=end)
        fetched.append((path.rsplit("/", 1)[-1], len(data)))
        return data

    monkeypatch.setattr(s3fs.S3FileSystem, "_cat_file", counting)
    s3fs.S3FileSystem.clear_instance_cache()  # instances bind their sync methods when made
    with aezip.open(f"{url}/manifest.json", device="cpu", storage_options=s3) as archive:
        opened = len(fetched)
        info = archive.info("class2/029.png")
        assert archive.image("class2/029.png").size == (13, 12)
        shard = archive.shards[2].rsplit("/", 1)[-1]  # files 20..29: class2/
    assert fetched[opened:] == [(shard, info.length)]  # one range request: that member only
    assert sum(n for p, n in fetched[:opened] if p == shard) < len(stored[shard])  # the index, not the shard

    items = aezip.ImageArchiveDataset(url, device="cpu", storage_options=s3)
    fetched.clear()
    assert len(items.get_batch(range(3, 9))) == 6
    assert len(fetched) == 1  # six neighbouring members of one shard: one merged request

    _cli("verify", url, "--device", "cpu", options=s3)
    _cli("unpack", url, str(tmp_path / "restored"), "--device", "cpu", options=s3)
    _cli("unpack", str(local), str(tmp_path / "expected"), "--device", "cpu", options={})
    assert _files(tmp_path / "restored") == _files(tmp_path / "expected")


def test_pack_from_s3(s3: dict[str, str], tree: Path, tmp_path: Path) -> None:
    fs = s3fs.S3FileSystem(**s3, skip_instance_cache=True)
    for path in sorted(tree.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{BUCKET}/photos/{path.relative_to(tree).as_posix()}", path.read_bytes())
    url = f"s3://{BUCKET}/photos/"
    shards = ("--shard-images", str(PER_SHARD), "--device", "cpu", "--jobs", "2", "--json")
    first = json.loads(_cli("pack", url, str(tmp_path / "ds"), *shards, options=s3))
    assert first["files"] == IMAGES + 1 and first["shards"] == 4
    again = json.loads(_cli("pack", url, str(tmp_path / "ds"), *shards, options=s3))
    assert again["written"] == [] and len(again["reused"]) == 4  # sizes and LastModified are stable
    _cli("pack", url, str(tmp_path / "one.aez"), "--device", "cpu", options=s3)
    one, ds = aezip.open(str(tmp_path / "one.aez"), device="cpu"), aezip.open(str(tmp_path / "ds"), device="cpu")
    with one, ds:
        assert one.names == ds.names and one.read_bytes("labels.csv") == (tree / "labels.csv").read_bytes()
        assert all(m.mtime_ns > 0 and m.mode & 0o777 == 0o644 for m in ds.members)  # from the listing
