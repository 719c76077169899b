"""ImageArchiveDataset: items match ``aezip unpack --format png``, DataLoader workers, pickling, labels."""

from __future__ import annotations

import csv
import io
import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch.utils.data import DataLoader, Subset
from torchvision import transforms

import aezip
from aezip.archive.pack import pack
from aezip.cli.app import main
from aezip.codec.codec import Codec
from aezip.loader.dataset import ImageArchiveDataset, to_tensor
from tests.conftest import photo_like

LABELS = {
    "cat/rgb.png": "cat",
    "cat/photo.jpg": "cat",
    "dog/gray.png": "dog",
    "dog/rgba.png": "dog",
    "dog/palette.png": "dog",
    "dog/twin.png": "dog",
}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small archive: RGB PNG, JPEG, grayscale, RGBA, palette (stored losslessly), two equal shapes, a CSV."""
    src = tmp_path_factory.mktemp("src")
    (src / "cat").mkdir()
    (src / "dog").mkdir()
    Image.fromarray(photo_like(40, 48, seed=1)).save(src / "cat/rgb.png")
    Image.fromarray(photo_like(32, 40, seed=2)).save(src / "cat/photo.jpg", quality=90)
    Image.fromarray(photo_like(40, 48, seed=3)[..., 1]).save(src / "dog/gray.png")
    alpha = np.linspace(0, 255, 48 * 40).astype(np.uint8).reshape(48, 40, 1)
    Image.fromarray(np.concatenate([photo_like(48, 40, seed=4), alpha], axis=-1), "RGBA").save(src / "dog/rgba.png")
    Image.fromarray(photo_like(24, 24, seed=5)).quantize(8).save(src / "dog/palette.png")
    Image.fromarray(photo_like(40, 48, seed=6)).save(src / "dog/twin.png")
    rows = io.StringIO()
    csv.writer(rows).writerows([["name", "label"], *LABELS.items()])
    (src / "labels.csv").write_text(rows.getvalue())
    out = tmp_path_factory.mktemp("arc") / "data.aez"
    pack(src, out, Codec(quality=6, device="cpu"))
    return out


@pytest.fixture(scope="module")
def unpacked(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("out") / "tree"
    result = CliRunner().invoke(main, ["unpack", "--format", "png", "--device", "cpu", str(archive), str(dest)])
    assert result.exit_code == 0, result.output
    return dest


def unpacked_image(unpacked: Path, name: str, kind: str) -> Image.Image:
    """What ``aezip unpack --format png`` wrote for a member."""
    path = unpacked / (str(Path(name).with_suffix(".png")) if kind == "image" else name)
    with Image.open(path) as im:
        im.load()
        return im


def list_json(archive: Path) -> list[dict]:
    result = CliRunner().invoke(main, ["list", "--json", str(archive)])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def name_target(name: str, dataset: ImageArchiveDataset) -> str:
    return name


class CsvLabels:
    """target= callable: the label of an image from the archive's labels.csv, read once per process."""

    def __init__(self) -> None:
        self.labels: dict[str, str] | None = None

    def __call__(self, name: str, dataset: ImageArchiveDataset) -> str:
        if self.labels is None:
            self.labels = dict(list(csv.reader(io.StringIO(dataset.read_text("labels.csv"))))[1:])
        return self.labels[name]


def as_uint8(t: torch.Tensor) -> np.ndarray:
    """A [0, 1] tensor back to uint8 (H, W) or (H, W, C) pixels (exact for x/255 inputs)."""
    arr = t.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def test_names_and_length_match_list_json(archive: Path) -> None:
    rows = list_json(archive)
    ds = ImageArchiveDataset(archive, device="cpu")
    expected = [r["name"] for r in rows if r["name"] != "labels.csv"]
    assert ds.names == expected
    assert len(ds) == len(rows) - 1 == 6
    kinds = {r["name"]: r["kind"] for r in rows}
    assert kinds["dog/palette.png"] == "raw" and kinds["cat/rgb.png"] == "image"
    assert ds.index("dog/gray.png") == expected.index("dog/gray.png")
    with pytest.raises(ValueError):
        ds.index("labels.csv")


def test_items_equal_unpack_png(archive: Path, unpacked: Path) -> None:
    kinds = {r["name"]: r["kind"] for r in list_json(archive)}
    tensors = ImageArchiveDataset(archive, device="cpu")
    pils = ImageArchiveDataset(archive, output="pil", device="cpu")
    channels = {"RGB": 3, "L": 1, "RGBA": 4, "P": 3}
    for i, name in enumerate(tensors.names):
        ref = unpacked_image(unpacked, name, kinds[name])
        im = pils[i]
        assert im.mode == ref.mode
        assert np.array_equal(np.asarray(im), np.asarray(ref)), name
        t = tensors[i]
        assert t.dtype == torch.float32 and t.shape == (channels[ref.mode], ref.height, ref.width)
        assert 0 <= t.min() and t.max() <= 1
        ref_pixels = np.asarray(ref.convert("RGB") if ref.mode == "P" else ref)
        assert np.array_equal(as_uint8(t), ref_pixels), name
    assert pils[tensors.index("dog/gray.png")].mode == "L"
    assert pils[tensors.index("dog/rgba.png")].mode == "RGBA"
    assert pils[tensors.index("dog/palette.png")].mode == "P"


def test_batch_equals_items_in_one_pass(archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = ImageArchiveDataset(archive, device="cpu")
    singles = [ds[i] for i in range(len(ds))]
    calls = []
    original = Codec.decode_many

    def counting(self: Codec, streams: list[bytes], max_batch_pixels: int = 4_000_000) -> list:
        calls.append((len(streams), max_batch_pixels))
        return original(self, streams, max_batch_pixels)

    monkeypatch.setattr(Codec, "decode_many", counting)
    loader = DataLoader(ds, batch_size=len(ds), collate_fn=list)
    (batch,) = list(loader)
    assert calls == [(5, ds.max_batch_pixels)]  # one decode for the 5 coded images; the palette PNG is raw
    assert all(torch.equal(a, b) for a, b in zip(batch, singles, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(ds.get_batch([-1, 0]), [singles[-1], singles[0]], strict=True))
    calls.clear()
    (sub,) = list(DataLoader(Subset(ds, [3, 1]), batch_size=2, collate_fn=list))
    assert len(calls) == 1 and torch.equal(sub[0], singles[3]) and torch.equal(sub[1], singles[1])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_dataloader_two_workers_yield_each_item_once(archive: Path) -> None:
    ds = ImageArchiveDataset(archive, target=name_target, device="cpu")
    reference = {ds.names[i]: ds[i][0] for i in range(len(ds))}
    loader = DataLoader(ds, batch_size=2, num_workers=2, shuffle=True, collate_fn=list)
    seen = Counter()
    for batch in loader:
        for image, name in batch:
            seen[name] += 1
            assert torch.equal(image, reference[name]), name
    assert seen == Counter(ds.names)


def test_iterable_streams_in_archive_order(archive: Path) -> None:
    ds = ImageArchiveDataset(archive, target=name_target, device="cpu")
    assert [name for _, name in ds.iter_images(chunk=4)] == ds.names
    assert [name for _, name in ds.iter_images(2, 4)] == ds.names[2:4]
    stream = ds.as_iterable(chunk=2)
    assert len(stream) == len(ds)
    names = [name for batch in DataLoader(stream, batch_size=1, num_workers=2, collate_fn=list) for _, name in batch]
    assert sorted(names) == sorted(ds.names)
    share = names[0::2]  # the loader alternates workers; worker 0 reads the first half in order
    assert share == ds.names[:3]


def test_pickle_roundtrip(archive: Path) -> None:
    ds = ImageArchiveDataset(archive, target=CsvLabels(), device="cpu")
    first = ds[0]
    assert ds._codec is not None
    data = pickle.dumps(ds)
    assert len(data) < 20_000  # index and options only: no network, no file handle
    copy = pickle.loads(data)
    assert copy.names == ds.names and copy._codec is None
    assert torch.equal(copy[0][0], first[0]) and copy[0][1] == first[1]
    stream = pickle.loads(pickle.dumps(ds.as_iterable()))
    assert len(list(stream)) == len(ds)


def test_transforms(archive: Path) -> None:
    plain = ImageArchiveDataset(archive, device="cpu")
    flipped = ImageArchiveDataset(archive, transform=lambda t: t.flip(-1), device="cpu")
    assert torch.equal(flipped[0], plain[0].flip(-1))
    tv = transforms.Compose([transforms.CenterCrop(16), transforms.ToTensor()])
    cropped = ImageArchiveDataset(archive, transform=tv, output="pil", device="cpu")
    for i in range(len(plain)):
        if plain.names[i] != "dog/palette.png":
            assert torch.equal(cropped[i], transforms.CenterCrop(16)(plain[i]))
    rgb = ImageArchiveDataset(archive, mode="RGB", device="cpu")
    assert {tuple(rgb[i].shape[:1]) for i in range(len(rgb))} == {(3,)}


def test_labels_by_name(archive: Path) -> None:
    ds = ImageArchiveDataset(archive, target=CsvLabels(), device="cpu")
    assert "labels.csv" not in ds.names
    assert ds.read_bytes("labels.csv") == ds.archive.read_bytes("labels.csv")
    assert ds.read_text("labels.csv").startswith("name,label")
    pairs = [ds[i] for i in range(len(ds))]
    assert [label for _, label in pairs] == [LABELS[n] for n in ds.names]
    assert isinstance(pairs[0][0], torch.Tensor)


def test_public_export_and_options(archive: Path) -> None:
    assert aezip.ImageArchiveDataset is ImageArchiveDataset
    with pytest.raises(aezip.AezipError):
        ImageArchiveDataset(archive, output="numpy")
    with pytest.raises(aezip.AezipError):
        ImageArchiveDataset(archive, device="tpu")


def test_to_tensor_modes() -> None:
    gray16 = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    assert torch.allclose(to_tensor(gray16), torch.tensor([[[0.0, 1.0]]]))
    assert to_tensor(Image.new("LA", (3, 2))).shape == (2, 2, 3)
    assert to_tensor(Image.new("1", (3, 2), 1)).eq(1).all()
    assert to_tensor(Image.new("CMYK", (3, 2))).shape == (3, 2, 3)
    palette = Image.new("P", (2, 2))
    palette.info["transparency"] = 0
    assert to_tensor(palette).shape == (4, 2, 2)
