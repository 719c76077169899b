"""Sharded datasets: pack into shards + manifest (any job count, local or Ray), read them back, resume, append."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

import aezip
from aezip.cli.app import main
from aezip.loader.archive_loader import ArchiveLoader, ShardedImageDataset
from aezip.store.executors import LocalExecutor
from aezip.store.shards import CodecSpec, pack_sharded, parse_size
from tests.conftest import photo_like

IMAGES = 96
PER_SHARD = 20  # files per shard: 96 images + labels.csv → 5 shards


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _shards(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _pack(src: Path, dst: Path | str, *extra: str) -> str:
    result = CliRunner().invoke(main, ["pack", str(src), str(dst), "--device", "cpu", *extra])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Many small images in class folders, a labels file, a link and an empty folder."""
    root = tmp_path_factory.mktemp("src")
    for i in range(IMAGES):
        path = root / f"class{i % 4}" / f"{i:04d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(photo_like(12 + i % 5, 12, i)).save(path)
    (root / "labels.csv").write_text("".join(f"{i},{i % 4}\n" for i in range(IMAGES)))
    os.symlink("class0/0000.png", root / "first.png")
    (root / "empty").mkdir()
    return root


@pytest.fixture(scope="module")
def dataset(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "data"
    output = _pack(tree, out, "--shard-images", str(PER_SHARD), "--jobs", "1")
    assert "5 shards: 5 written, 0 reused" in output
    return out


def test_manifest_lists_shards_with_checksums(dataset: Path) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["format"] == "aezip-manifest" and manifest["version"] == 1
    names = [s["name"] for s in manifest["shards"]]
    assert names == [f"shard-{k:05d}.aez" for k in range(5)]
    assert sorted(p.name for p in dataset.iterdir()) == sorted([*names, "manifest.json"])  # no journal, no temp files
    assert manifest["totals"]["files"] == IMAGES + 1 and manifest["totals"]["images"] == IMAGES
    assert manifest["settings"]["quality"] == 6 and manifest["settings"]["model_name"]
    for shard in manifest["shards"]:
        assert shard["bytes"] == (dataset / shard["name"]).stat().st_size
        assert shard["files"] <= PER_SHARD


def test_jobs_and_shard_size_give_the_same_bytes(tree: Path, dataset: Path, tmp_path: Path) -> None:
    _pack(tree, tmp_path / "two", "--shard-images", str(PER_SHARD), "--jobs", "2")
    assert _shards(tmp_path / "two") == _shards(dataset)
    out = json.loads(_pack(tree, tmp_path / "sized", "--shard-size", "2KB", "--json"))
    assert out["shards"] >= 4 and len(out["written"]) == out["shards"]


def test_every_command_reads_a_manifest(tree: Path, dataset: Path, tmp_path: Path, runner: CliRunner) -> None:
    single = tmp_path / "one.aez"
    _pack(tree, single)
    for target in (dataset, dataset / "manifest.json"):
        listed = runner.invoke(main, ["list", str(target), "--json"])
        assert listed.exit_code == 0, listed.output
        assert json.loads(listed.output) == json.loads(runner.invoke(main, ["list", str(single), "--json"]).output)
    info = runner.invoke(main, ["info", str(dataset)])
    assert info.exit_code == 0 and "5 shards" in info.output, info.output
    verified = runner.invoke(main, ["verify", str(dataset), "--device", "cpu"])
    assert verified.exit_code == 0 and "verified" in verified.output, verified.output
    for src, dest in ((dataset, tmp_path / "from-shards"), (single, tmp_path / "from-one")):
        result = runner.invoke(main, ["unpack", str(src), str(dest), "--device", "cpu"])
        assert result.exit_code == 0, result.output
    assert _files(tmp_path / "from-shards") == _files(tmp_path / "from-one")
    assert (tmp_path / "from-shards" / "first.png").is_symlink() and (tmp_path / "from-shards" / "empty").is_dir()


def test_python_api_reads_a_manifest(dataset: Path, tmp_path: Path) -> None:
    with aezip.open(str(dataset / "manifest.json"), device="cpu") as archive:
        assert len(archive) == IMAGES + 3
        assert archive.image("class3/0095.png").size == (12, 12)
        assert archive.read_bytes("labels.csv").startswith(b"0,0\n")
    items = aezip.ImageArchiveDataset(dataset, device="cpu")
    assert len(items) == IMAGES  # labels.csv and the link first.png are not items
    sharded = ShardedImageDataset(dataset, device="cpu")
    assert len(sharded.counts) == 5 and sum(sharded.counts) == len(items)
    loader = ArchiveLoader(dataset / "manifest.json", batch_size=8, shuffle=False, collate_fn=list, world_size=1)
    first = next(iter(loader))
    assert len(first) == 8 and len(loader) == IMAGES // 8


def test_resume_redoes_only_missing_or_broken_shards(tree: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(dataset, out, symlinks=True)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "shard-00001.aez").unlink()
    broken = bytearray((out / "shard-00003.aez").read_bytes())
    broken[40] ^= 0xFF
    (out / "shard-00003.aez").write_bytes(bytes(broken))
    result = json.loads(_pack(tree, out, "--shard-images", str(PER_SHARD), "--json"))
    assert result["written"] == ["shard-00001.aez", "shard-00003.aez"]
    assert result["reused"] == ["shard-00000.aez", "shard-00002.aez", "shard-00004.aez"]
    assert _shards(out) == _shards(dataset)
    assert all(out.joinpath(n).stat().st_mtime_ns == before[n] for n in result["reused"])


class _Killed(Exception):
    pass


class _DiesAfter(LocalExecutor):
    """An executor whose job dies after ``n`` shards (as a killed pack would)."""

    def __init__(self, n: int) -> None:
        super().__init__(1)
        self.n = n

    def run(self, fn, tasks):  # type: ignore[no-untyped-def]
        for done, item in enumerate(super().run(fn, tasks)):
            if done == self.n:
                raise _Killed
            yield item


def test_killed_pack_resumes_from_finished_shards(tree: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    with pytest.raises(_Killed):
        pack_sharded(tree, out, CodecSpec(device="cpu"), shard_images=PER_SHARD, executor=_DiesAfter(2))
    assert not (out / "manifest.json").exists()
    result = json.loads(_pack(tree, out, "--shard-images", str(PER_SHARD), "--json"))
    assert result["reused"] == ["shard-00000.aez", "shard-00001.aez"]
    assert result["written"] == ["shard-00002.aez", "shard-00003.aez", "shard-00004.aez"]
    assert _shards(out) == _shards(dataset)


def test_changed_dataset_needs_force_and_append_adds_shards(tree: Path, tmp_path: Path, runner: CliRunner) -> None:
    src = tmp_path / "src"
    shutil.copytree(tree, src, symlinks=True)
    out = tmp_path / "grow"
    _pack(src, out, "--shard-images", "40")
    old = _shards(out)
    Image.fromarray(photo_like(12, 12, 999)).save(src / "class1" / "new.png")
    refused = runner.invoke(main, ["pack", str(src), str(out), "--shard-images", "40", "--device", "cpu"])
    assert refused.exit_code == 1 and "--force" in refused.output and "Traceback" not in refused.output
    added = json.loads(_pack(src, out, "--append", "--json"))
    assert added["written"] == ["shard-00003.aez"] and added["files"] == 1 and added["already_present"] == IMAGES + 1
    assert all(_shards(out)[name] == data for name, data in old.items() if name != "manifest.json")
    with aezip.open(str(out), device="cpu") as archive:
        assert "class1/new.png" in archive and len(archive) == IMAGES + 4
    nothing = runner.invoke(main, ["pack", str(src), str(out), "--append", "--device", "cpu"])
    assert nothing.exit_code == 1 and "nothing to append" in nothing.output


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: "{not json", "not JSON"),
        (lambda m: m.replace('"version": 1', '"version": 99'), "newer"),
        (lambda m: m.replace('"shard-00000.aez"', '"../x.aez"'), "plain, unique"),
        (lambda m: m.replace('"bytes": ', '"bytes": 1', 1), "the manifest says"),
    ],
)
def test_bad_manifest_is_one_line_error(dataset: Path, tmp_path: Path, runner: CliRunner, edit, message) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "bad"
    shutil.copytree(dataset, out)
    manifest = out / "manifest.json"
    manifest.write_text(edit(manifest.read_text()))
    result = runner.invoke(main, ["list", str(out)])
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_checksum_mismatch_fails_verify(dataset: Path, tmp_path: Path, runner: CliRunner) -> None:
    out = tmp_path / "tampered"
    shutil.copytree(dataset, out)
    data = bytearray((out / "shard-00002.aez").read_bytes())
    data[30] ^= 1
    (out / "shard-00002.aez").write_bytes(bytes(data))
    result = runner.invoke(main, ["verify", str(out), "--device", "cpu"])
    assert result.exit_code == 1 and "shard-00002.aez" in result.output


def test_usage_errors(tree: Path, tmp_path: Path, runner: CliRunner) -> None:
    bad = runner.invoke(main, ["pack", str(tree), str(tmp_path / "x"), "--shard-size", "lots"])
    assert bad.exit_code == 2 and "not a size" in bad.output
    both = runner.invoke(main, ["pack", str(tree), str(tmp_path / "x"), "--engine", "ray"])
    assert both.exit_code == 2 and "--shard-size" in both.output
    url = runner.invoke(main, ["pack", str(tree), "memory://one.aez"])
    assert url.exit_code == 2 and "sharded" in url.output
    assert parse_size("1GB") == 10**9 and parse_size("512MiB") == 512 << 20 and parse_size("1000") == 1000


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None or os.environ.get("AEZIP_TEST_RAY") != "1",
    reason="needs ray and AEZIP_TEST_RAY=1 (starts a local 2-CPU Ray instance)",
)
def test_ray_engine_writes_the_same_shards(tree: Path, dataset: Path, tmp_path: Path) -> None:
    _pack(tree, tmp_path / "ray", "--shard-images", str(PER_SHARD), "--engine", "ray", "--jobs", "2")
    assert _shards(tmp_path / "ray") == _shards(dataset)


def test_object_store_reads_members_by_range_requests(
    dataset: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsspec = pytest.importorskip("fsspec")
    from fsspec.implementations.memory import MemoryFileSystem

    store = fsspec.filesystem("memory")
    for path in dataset.iterdir():
        store.pipe(f"/remote-ds/{path.name}", path.read_bytes())
    fetched: list[tuple[str, int]] = []
    original = MemoryFileSystem.cat_file

    def counting(self, path, start=None, end=None, **kw):  # type: ignore[no-untyped-def]
        data = original(self, path, start=start, end=end, **kw)
        fetched.append((path, len(data)))
        return data

    monkeypatch.setattr(MemoryFileSystem, "cat_file", counting)
    with aezip.open("memory://remote-ds/manifest.json", device="cpu") as archive:
        opened = len(fetched)
        shard_bytes = (dataset / "shard-00004.aez").stat().st_size
        info = archive.info("class3/0095.png")
        assert archive.image("class3/0095.png").size == (12, 12)
    assert fetched[opened:] == [("/remote-ds/shard-00004.aez", info.length)]  # that member only
    index_reads = [n for p, n in fetched[:opened] if p.endswith("shard-00004.aez")]
    assert len(index_reads) == 3 and sum(index_reads) < shard_bytes  # header, footer, index: not the shard
    items = aezip.ImageArchiveDataset("memory://remote-ds", device="cpu")
    assert len(items) == IMAGES and items[0].shape[0] == 3
    listed = runner.invoke(main, ["list", "memory://remote-ds/", "--storage-option", "skip_instance_cache=false"])
    assert listed.exit_code == 0 and "class3/0095.png" in listed.output, listed.output
    verified = runner.invoke(main, ["verify", "memory://remote-ds", "--device", "cpu"])
    assert verified.exit_code == 0, verified.output
    missing = runner.invoke(main, ["list", "memory://nowhere/manifest.json"])
    assert missing.exit_code == 1 and "Traceback" not in missing.output


def test_pack_into_an_object_store_uploads_whole_shards(tree: Path, dataset: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    store = fsspec.filesystem("memory")
    first = json.loads(_pack(tree, "memory://uploaded", "--shard-images", str(PER_SHARD), "--json"))
    assert len(first["written"]) == 5
    uploaded = {p.rsplit("/", 1)[-1]: store.cat_file(p) for p in store.ls("/uploaded", detail=False)}
    assert uploaded == _shards(dataset)  # the same bytes as packed locally, no journal or temporary files
    store.rm_file("/uploaded/shard-00002.aez")
    again = json.loads(_pack(tree, "memory://uploaded", "--shard-images", str(PER_SHARD), "--json"))
    assert again["written"] == ["shard-00002.aez"] and len(again["reused"]) == 4


def _dies_once(marker: str) -> str:
    """A task whose first attempt kills its worker process (as an OOM kill or a lost node would)."""
    if not os.path.exists(marker):
        Path(marker).write_text("died")
        os._exit(1)
    return "done"


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None or os.environ.get("AEZIP_TEST_RAY") != "1",
    reason="needs ray and AEZIP_TEST_RAY=1 (starts a local 2-CPU Ray instance)",
)
def test_ray_retries_a_task_whose_worker_was_killed(tmp_path: Path) -> None:
    from aezip.store.executors import RayExecutor

    results = dict(RayExecutor(cpus=2).run(_dies_once, [str(tmp_path / "marker")]))
    assert results == {0: "done"} and (tmp_path / "marker").read_text() == "died"


def test_batches_read_merged_ranges(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of members is one range request per run of nearby payloads, not one per member."""
    fsspec = pytest.importorskip("fsspec")
    from fsspec.implementations.memory import MemoryFileSystem

    from aezip.archive.container.reader import merge_ranges
    from aezip.store.remote import RemoteArchiveReader

    assert merge_ranges([(50, 10), (0, 10), (10, 5), (70, 1)], 10, 100) == [(0, 15, [1, 2]), (50, 71, [0, 3])]
    assert merge_ranges([(0, 10), (10, 10)], 0, 15) == [(0, 10, [0]), (10, 20, [1])]  # past the read limit
    store = fsspec.filesystem("memory")
    for path in dataset.iterdir():
        store.pipe(f"/merged-ds/{path.name}", path.read_bytes())
    fetched: list[tuple[str, int]] = []
    original = MemoryFileSystem.cat_file

    def counting(self, path, start=None, end=None, **kw):  # type: ignore[no-untyped-def]
        data = original(self, path, start=start, end=end, **kw)
        fetched.append((path.rsplit("/", 1)[-1], len(data)))
        return data

    monkeypatch.setattr(MemoryFileSystem, "cat_file", counting)
    items = aezip.ImageArchiveDataset("memory://merged-ds", device="cpu", output="pil")
    with aezip.open("memory://merged-ds", device="cpu") as archive:
        infos = [archive.info(items.names[i]) for i in range(24, 32)]
        local = [aezip.open(str(dataset), device="cpu").image(i.name) for i in infos]
    shard = {archive_shard(dataset, i.name) for i in infos}
    assert len(shard) == 1  # items 24..31 lie in one shard, one after another
    fetched.clear()
    batch = items.get_batch(range(24, 32))
    span = infos[-1].offset + infos[-1].length - infos[0].offset
    assert fetched == [(shard.pop(), span)]  # one request: exactly the run of eight payloads
    assert [im.tobytes() for im in batch] == [im.tobytes() for im in local]
    fetched.clear()
    spread = [0, 40, 80]  # three shards: one request each
    items.get_batch(spread)
    assert len(fetched) == 3 and len({p for p, _ in fetched}) == 3
    fetched.clear()
    monkeypatch.setattr(RemoteArchiveReader, "merge_gap", 0)
    items.get_batch([24, 26, 27])  # 24 and 26 are not adjacent: with no gap allowed, two requests
    assert [n for _, n in fetched] == [infos[0].length, infos[2].length + infos[3].length]


def archive_shard(dataset: Path, name: str) -> str:
    with aezip.open(str(dataset), device="cpu") as archive:
        return Path(archive._reader.shard_of(name)).name


def _upload(root: Path, prefix: str) -> int:
    """The regular files under ``root`` into the memory:// store under ``prefix``; returns how many."""
    import fsspec

    store = fsspec.filesystem("memory")
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()]
    for path in files:
        store.pipe(f"/{prefix}/{path.relative_to(root).as_posix()}", path.read_bytes())
    return len(files)


def test_pack_from_an_object_store(tree: Path, tmp_path: Path, runner: CliRunner) -> None:
    pytest.importorskip("fsspec")
    from aezip.store.remote import download_source, list_source

    count = _upload(tree, "src-tree")
    assert count == IMAGES + 1  # object stores hold no links or empty folders
    one = tmp_path / "one.aez"
    _pack("memory://src-tree/", one)
    sharded = json.loads(_pack("memory://src-tree", tmp_path / "ds", "--shard-images", str(PER_SHARD), "--json"))
    assert sharded["shards"] == 5 and sharded["files"] == count
    with aezip.open(str(one), device="cpu") as a, aezip.open(str(tmp_path / "ds"), device="cpu") as b:
        assert a.names == b.names and len(a) == count and "class3/0095.png" in a
    # The same bytes as packing a local copy (the store's mtimes are kept, modes are 644).
    copy = tmp_path / "copy"
    download_source("memory://src-tree", list_source("memory://src-tree"), copy)
    _pack(copy, tmp_path / "local", "--shard-images", str(PER_SHARD))
    assert _shards(tmp_path / "local") == _shards(tmp_path / "ds")
    again = json.loads(_pack("memory://src-tree", tmp_path / "ds", "--shard-images", str(PER_SHARD), "--json"))
    assert again["written"] == [] and len(again["reused"]) == 5  # the listing's sizes and mtimes are stable
    to_store = json.loads(_pack("memory://src-tree", "memory://ds-from-store", "--shard-images", "50", "--json"))
    assert to_store["shards"] == 2
    restored = runner.invoke(main, ["unpack", "memory://ds-from-store", str(tmp_path / "out"), "--device", "cpu"])
    assert restored.exit_code == 0, restored.output
    assert sorted(_files(tmp_path / "out")) == sorted(_files(copy))
    missing = runner.invoke(main, ["pack", "memory://no-such-tree", str(tmp_path / "x"), "--shard-images", "5"])
    assert missing.exit_code == 1 and "no such file or folder" in missing.output, missing.output


def test_quality_floor_with_shards(tree: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for path in sorted((tree / "class1").iterdir())[:6]:
        (src / "class1").mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, src / "class1" / path.name)
    out = tmp_path / "floor"
    result = json.loads(_pack(src, out, "--shard-images", "3", "--min-psnr", "30", "--json"))
    assert result["shards"] == 2 and isinstance(result["below_floor"], list)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["quality_target"]["min_psnr"] == 30
    with aezip.open(str(out), device="cpu") as archive:
        stats = [archive.stats(name) for name in archive.names]
    assert all(s is not None and (s.psnr >= 30 or s.below_floor) for s in stats)
    changed = json.loads(_pack(src, out, "--shard-images", "3", "--min-psnr", "20", "--json", "--force"))
    assert len(changed["written"]) == 2  # a different floor is a different dataset
