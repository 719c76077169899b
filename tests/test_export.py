"""Interop: aezip export (webdataset, imagefolder), pack from a tar, Hugging Face iterable."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from aezip.archive.pack import pack
from aezip.archive.reader import Archive
from aezip.cli.app import main
from aezip.codec.codec import Codec
from aezip.loader.export import sample_key
from aezip.model.registry import shipped_models
from tests.conftest import photo_like

KEYS = ["cat/a", "cat/b_v2", "dog/c", "dog/d"]  # WebDataset keys of the four images


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of coded images (one name with dots), a palette PNG stored losslessly, a CSV."""
    src = tmp_path_factory.mktemp("src")
    for folder in ("cat", "dog"):
        (src / folder).mkdir()
    Image.fromarray(photo_like(16, 24, seed=1)).save(src / "cat/a.png")
    Image.fromarray(photo_like(16, 16, seed=2)).save(src / "cat/b.v2.jpg", quality=90)
    Image.fromarray(photo_like(24, 16, seed=3)).save(src / "dog/c.png")
    Image.fromarray(photo_like(16, 16, seed=4)).quantize(8).save(src / "dog/d.png")
    (src / "labels.csv").write_text("name,label\n")
    out = tmp_path_factory.mktemp("arc") / "pets.aez"
    small = next(m for m in shipped_models() if m.name == "v1-cpu-64x96")
    pack(src, out, Codec(quality=2, device="cpu", model=small.path))
    return out


@pytest.fixture(scope="module")
def reference(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("ref") / "tree"
    result = CliRunner().invoke(main, ["unpack", "--format", "png", str(archive), str(dest)])
    assert result.exit_code == 0, result.output
    return dest


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def test_export_webdataset_shards(archive: Path, reference: Path, tmp_path: Path) -> None:
    dest = tmp_path / "wds"
    args = ["export", str(archive), str(dest), "--format", "webdataset", "--shard-size", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "exported 4 images as 2 shards" in result.output and "1 other members left out" in result.output
    shards = sorted(dest.iterdir())
    assert [p.name for p in shards] == ["pets-000000.tar", "pets-000001.tar"]
    files: dict[str, bytes] = {}
    for shard in shards:
        with tarfile.open(shard) as tar:
            for m in tar:
                handle = tar.extractfile(m)
                assert handle is not None
                files[m.name] = handle.read()
    assert sorted(files) == sorted(f"{key}.{ext}" for key in KEYS for ext in ("png", "json"))
    meta = json.loads(files["cat/b_v2.json"])
    assert meta["name"] == "cat/b.v2.jpg" and meta["lossy"] is True
    assert json.loads(files["dog/d.json"])["lossy"] is False
    assert np.array_equal(pixels(files["cat/a.png"]), pixels((reference / "cat/a.png").read_bytes()))
    assert np.array_equal(pixels(files["cat/b_v2.png"]), pixels((reference / "cat/b.v2.png").read_bytes()))
    assert files["dog/d.png"] == (reference / "dog/d.png").read_bytes()  # stored losslessly: the original bytes
    again = CliRunner().invoke(main, ["export", str(archive), str(dest), "--format", "webdataset"])
    assert again.exit_code == 1 and "not empty" in again.output


def test_export_imagefolder_reads_with_torchvision(archive: Path, reference: Path, tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    dest = tmp_path / "folder"
    result = CliRunner().invoke(main, ["export", str(archive), str(dest), "--format", "imagefolder"])
    assert result.exit_code == 0, result.output
    names = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert names == ["cat/a.png", "cat/b.v2.png", "dog/c.png", "dog/d.png"]
    for name in names:
        assert np.array_equal(pixels((dest / name).read_bytes()), pixels((reference / name).read_bytes()))
    folder = ImageFolder(str(dest))
    assert folder.classes == ["cat", "dog"] and len(folder) == 4
    original = tmp_path / "original"
    result = CliRunner().invoke(
        main, ["export", str(archive), str(original), "--format", "imagefolder", "--image-format", "original"]
    )
    assert result.exit_code == 0, result.output
    with Image.open(original / "cat/b.v2.jpg") as im:
        assert im.format == "JPEG"


def test_pack_a_webdataset_tar(archive: Path, tmp_path: Path) -> None:
    wds = tmp_path / "wds"
    assert CliRunner().invoke(main, ["export", str(archive), str(wds), "--format", "webdataset"]).exit_code == 0
    shard = wds / "pets-000000.tar"
    with tarfile.open(shard, "a") as tar:  # hostile entries are skipped and reported
        link = tarfile.TarInfo("cat/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        evil = tarfile.TarInfo("../evil.txt")
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"x"))
    out = tmp_path / "packed"
    result = CliRunner().invoke(main, ["pack", "-q", "1", str(shard), f"{out}/"])
    assert result.exit_code == 0, result.output
    assert "2 skipped" in result.output and "cat/link.png" in result.output
    with Archive(out / "pets-000000.aez") as packed:
        assert packed.names == sorted(f"{key}.{ext}" for key in KEYS for ext in ("png", "json"))
        assert [packed.is_image(n) for n in ("cat/a.png", "dog/d.png")] == [True, False]  # palette stays lossless
        assert json.loads(packed.read_bytes("cat/a.json"))["name"] == "cat/a.png"
    assert not list(tmp_path.glob(".*aezip-tmp")) and not list(out.glob(".*aezip-tmp"))
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar at all" * 100)
    result = CliRunner().invoke(main, ["pack", str(bad), str(tmp_path / "bad.aez")])
    assert result.exit_code == 1 and "not a readable tar" in result.output


def test_sample_keys_are_unique_and_dot_free() -> None:
    used: set[str] = set()
    assert [sample_key(n, used) for n in ("a/x.png", "a/x.jpg", "a/x.v1.png", "a/x_v1.png", "b/y")] == [
        "a/x",
        "a/x_jpg",
        "a/x_v1",
        "a/x_v1_png",
        "b/y",
    ]


def test_hugging_face_iterable(archive: Path) -> None:
    pytest.importorskip("datasets")
    from datasets.distributed import split_dataset_by_node

    from aezip.loader.interop import hf_iterable

    data = hf_iterable([archive, archive], num_shards=4)
    assert data.num_shards == 4
    examples = list(data)
    assert [e["name"] for e in examples] == ["cat/a.png", "cat/b.v2.jpg", "dog/c.png", "dog/d.png"] * 2
    assert examples[0]["image"].mode == "RGB" and examples[0]["image"].size == (24, 16)
    ranks = [[e["name"] for e in split_dataset_by_node(data, r, 2)] for r in range(2)]
    assert sorted(ranks[0] + ranks[1]) == sorted(e["name"] for e in examples) and all(ranks)
