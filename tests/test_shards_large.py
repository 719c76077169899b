"""Issue 15's acceptance test at scale: 2,000 small images from the shipped samples into ≥ 4 shards.

``--jobs 2``, ``--engine local`` (one process) and ``--engine ray`` (with ``AEZIP_TEST_RAY=1``) give
manifests listing the same shards with the same sha256, and unpacking the manifest restores the same
tree as a one-file archive of the same folder. The images are 8 to 12 px crops (the codec's smallest
inputs) coded with ``--entropy zstd``, so the whole module stays near a minute on two CPU cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from aezip.cli.app import main

IMAGES = 2000
PER_SHARD = 400  # 2,000 images + labels.csv → 6 shards
SAMPLES = Path(__file__).resolve().parent.parent / "examples" / "photos"
CODING = ("--device", "cpu", "--entropy", "zstd")


def _pack(src: Path, dst: Path, *extra: str) -> dict:
    result = CliRunner().invoke(main, ["pack", str(src), str(dst), *CODING, *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output) if "--json" in extra else {}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _listing(manifest: Path) -> list[tuple[str, int, int, str]]:
    shards = json.loads(manifest.read_text())["shards"]
    return [(s["name"], s["files"], s["bytes"], s["sha256"]) for s in shards]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 crops of the sample photos (8 to 12 px a side, PNG) in 20 folders, and a labels file."""
    photos = [Image.open(SAMPLES / name).convert("RGB") for name in ("monarch.png", "peppers.jpg", "boats/sail.webp")]
    root = tmp_path_factory.mktemp("many")
    for i in range(IMAGES):
        photo = photos[i % len(photos)]
        width, height = 8 + i % 5, 8 + (i // 5) % 5
        left, top = (i * 37) % (photo.width - width), (i * 53) % (photo.height - height)
        path = root / f"class{i % 20:02d}" / f"{i:05d}.png"
        path.parent.mkdir(exist_ok=True)
        photo.crop((left, top, left + width, top + height)).save(path)
    (root / "labels.csv").write_text("".join(f"class{i % 20:02d}/{i:05d}.png,{i % 20}\n" for i in range(IMAGES)))
    return root


@pytest.fixture(scope="module")
def two_jobs(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("jobs2") / "data"
    summary = _pack(tree, out, "--shard-images", str(PER_SHARD), "--jobs", "2", "--json")
    assert summary["files"] == IMAGES + 1 and summary["images"] == IMAGES
    assert summary["shards"] >= 4 and len(summary["written"]) == summary["shards"]
    return out


def test_local_engine_lists_the_same_shards(tree: Path, two_jobs: Path, tmp_path: Path) -> None:
    _pack(tree, tmp_path / "local", "--shard-images", str(PER_SHARD), "--engine", "local", "--jobs", "1")
    listing = _listing(two_jobs / "manifest.json")
    assert len(listing) == 6 and sum(files for _, files, _, _ in listing) == IMAGES + 1
    assert _listing(tmp_path / "local" / "manifest.json") == listing
    assert (tmp_path / "local" / "manifest.json").read_bytes() == (two_jobs / "manifest.json").read_bytes()


@pytest.mark.skipif(
    importlib.util.find_spec("ray") is None or os.environ.get("AEZIP_TEST_RAY") != "1",
    reason="needs ray and AEZIP_TEST_RAY=1 (starts a local 2-CPU Ray instance)",
)
def test_ray_engine_lists_the_same_shards(tree: Path, two_jobs: Path, tmp_path: Path) -> None:
    _pack(tree, tmp_path / "ray", "--shard-images", str(PER_SHARD), "--engine", "ray", "--jobs", "2")
    assert _listing(tmp_path / "ray" / "manifest.json") == _listing(two_jobs / "manifest.json")
    assert (tmp_path / "ray" / "manifest.json").read_bytes() == (two_jobs / "manifest.json").read_bytes()


def test_unpacked_manifest_matches_a_one_file_archive(tree: Path, two_jobs: Path, tmp_path: Path) -> None:
    _pack(tree, tmp_path / "one.aez", "--jobs", "2")
    for src, dest in ((two_jobs / "manifest.json", "from-shards"), (tmp_path / "one.aez", "from-one")):
        result = CliRunner().invoke(main, ["unpack", str(src), str(tmp_path / dest), "--device", "cpu", "--jobs", "2"])
        assert result.exit_code == 0, result.output
    restored = _files(tmp_path / "from-shards")
    assert len(restored) == IMAGES + 1 and restored == _files(tmp_path / "from-one")
    assert restored["labels.csv"] == (tree / "labels.csv").read_bytes()
