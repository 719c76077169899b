"""Decoding only a region: ``Codec.decode(box=)``, ``Archive.image(box=)`` and the datasets' ``crop``.

The synthesis of a box runs on the latents under it and their halo; its pixels must be those of the
whole image, cropped, up to float rounding, on the NumPy decoder and on PyTorch's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import aezip
from aezip.archive.pack import pack
from aezip.codec.codec import Codec, latent_window
from aezip.errors import AezipError
from aezip.loader.archive_loader import ArchiveLoader, crop_positions
from aezip.loader.dataset import ImageArchiveDataset, crop_window, to_tensor
from tests.conftest import photo_like

BOXES = [
    (0, 0, 123, 101),  # the whole image
    (0, 0, 17, 9),  # the top-left corner
    (106, 84, 123, 101),  # the bottom-right corner, across the padded last latent row and column
    (37, 21, 38, 22),  # one pixel
    (5, 40, 121, 77),  # odd sizes, not on latent edges
]


def _rgba() -> np.ndarray:
    alpha = (np.arange(101 * 123) % 251).astype(np.uint8).reshape(101, 123, 1)
    return np.concatenate([photo_like(101, 123, 7), alpha], axis=-1)


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(device="cpu")


@pytest.fixture(scope="module")
def streams(codec: Codec) -> dict[str, bytes]:
    return {
        "RGB": codec.encode(photo_like(101, 123, 3)),
        "RGBA": codec.encode(_rgba()),
        "L": codec.encode(photo_like(101, 123, 5)[..., 0]),
    }


def _close(part: np.ndarray, whole: np.ndarray) -> None:
    """Equal up to float rounding: at most one level apart, and as often up as down."""
    assert part.shape == whole.shape
    diff = part.astype(np.int16) - whole.astype(np.int16)
    assert np.abs(diff).max() <= 1
    assert abs(float(diff.mean())) < 0.01


@pytest.mark.parametrize("path", ["numpy", "torch"])
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_a_box_decodes_as_the_whole_image_cropped(
    codec: Codec, streams: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, path: str, mode: str
) -> None:
    if path == "torch":  # PyTorch's synthesis on the CPU, in fp32, as on a GPU
        monkeypatch.setattr(Codec, "numpy_decoder", property(lambda self: False))
    whole = codec.decode(streams[mode])
    assert whole.mode == mode
    for box in BOXES:
        part = codec.decode(streams[mode], box=box)
        assert part.mode == mode and part.size == (box[2] - box[0], box[3] - box[1])
        _close(np.asarray(part), np.asarray(whole.crop(box)))
        if mode == "RGBA":  # alpha is stored losslessly: its crop is exact
            assert np.array_equal(np.asarray(part)[..., 3], np.asarray(whole.crop(box))[..., 3])


@pytest.mark.parametrize("path", ["numpy", "torch"])
def test_a_box_larger_than_a_tile_is_synthesised_in_tiles(
    codec: Codec, streams: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    if path == "torch":
        monkeypatch.setattr(Codec, "numpy_decoder", property(lambda self: False))
    whole = np.asarray(codec.decode(streams["RGB"]))
    monkeypatch.setattr(codec, "tile", 3)
    box = (9, 3, 120, 98)
    _close(np.asarray(codec.decode(streams["RGB"], box=box)), whole[3:98, 9:120])


def test_decode_many_and_decode_tensors_take_a_box_per_stream(codec: Codec, streams: dict[str, bytes]) -> None:
    data = [streams["RGB"], streams["L"], streams["RGB"]]
    boxes = [(0, 0, 50, 40), None, (70, 60, 120, 100)]
    decoded = codec.decode_many(data, boxes=boxes)
    tensors = codec.decode_tensors(data, boxes=boxes)
    for d, t, stream, box in zip(decoded, tensors, data, boxes, strict=True):
        whole = codec.decode(stream)
        ref = np.asarray(whole if box is None else whole.crop(box))
        _close(np.asarray(d.to_image()), ref)
        assert t.dtype == torch.uint8 and t.shape[0] == 3 and tuple(t.shape[1:]) == ref.shape[:2]
    with pytest.raises(AezipError, match="2 boxes for 3 streams"):
        codec.decode_many(data, boxes=boxes[:2])


@pytest.mark.parametrize("box", [(0, 0, 0, 5), (-1, 0, 5, 5), (0, 0, 124, 101), (10, 10, 5, 20), (1, 2, 3), "abcd"])
def test_a_box_outside_the_image_is_refused(codec: Codec, streams: dict[str, bytes], box: object) -> None:
    with pytest.raises(AezipError, match="box"):
        codec.decode(streams["RGB"], box=box)  # type: ignore[arg-type]


def test_latent_windows_cover_the_halo_and_have_one_shape_per_crop_size() -> None:
    shapes = set()
    for top in range(0, 300 - 64 + 1, 7):
        t0, t1, l0, l1 = latent_window((top, top, top + 64, top + 64), 19, 19, 16)
        assert t0 <= max(top // 16 - 2, 0) and t1 >= min(-(-(top + 64) // 16) + 2, 19)
        shapes.add((t1 - t0, l1 - l0))
    assert shapes == {(9, 9)}  # ceil(64 / 16) + 1 + 2 · 2
    assert latent_window((0, 0, 30, 30), 3, 4, 16) == (0, 3, 0, 4)  # a small grid: all of it


# --- archives and datasets ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    Image.fromarray(photo_like(101, 123, 3)).save(src / "a.png")
    Image.fromarray(_rgba(), "RGBA").save(src / "b.png")
    Image.fromarray(photo_like(70, 90, 4)[..., 0]).save(src / "c.png")
    Image.fromarray(photo_like(20, 30, 5)).save(src / "small.png")  # smaller than the crops below
    Image.fromarray(photo_like(60, 50, 6)).quantize(8).save(src / "palette.png")  # stored losslessly
    out = tmp_path_factory.mktemp("arc") / "data.aez"
    pack(src, out, Codec(device="cpu"))
    return out


def test_archive_image_takes_a_box(archive: Path) -> None:
    with aezip.open(archive, device="cpu") as arc:
        assert arc.is_image("a.png") and not arc.is_image("palette.png")
        for name, box in [("a.png", (3, 4, 100, 90)), ("b.png", (60, 50, 123, 101)), ("palette.png", (1, 2, 40, 33))]:
            part = arc.image(name, box=box)
            whole = arc.image(name)
            assert part.mode == whole.mode and part.size == (box[2] - box[0], box[3] - box[1])
            _close(np.asarray(part), np.asarray(whole.crop(box)))
        with pytest.raises(AezipError, match=r"a\.png: box \(0, 0, 200, 10\)"):
            arc.image("a.png", box=(0, 0, 200, 10))
        with pytest.raises(AezipError, match=r"palette\.png: box"):
            arc.image("palette.png", box=(0, 0, 51, 10))


def test_crop_window_is_torchvisions_random_crop() -> None:
    """Offsets uniform over the valid ones; a short side padded on both sides by the difference."""
    starts = {crop_window(100, 80, (64, 64), (u, u))[0][:2] for u in np.linspace(0, 0.999, 200)}
    assert {s[0] for s in starts} == set(range(100 - 64 + 1)) and {s[1] for s in starts} == set(range(80 - 64 + 1))
    box, offset = crop_window(30, 20, (64, 64), (0.0, 0.999))
    assert box == (0, 0, 30, 20) and offset == (44, 0)  # padded by 44 rows and 34 columns on each side
    with pytest.raises(AezipError, match="smaller than the crop"):
        crop_window(30, 20, (64, 64), (0.5, 0.5), pad_if_needed=False)


def _padding_is_zero(crop: torch.Tensor, dy: int, dx: int, size: tuple[int, ...]) -> bool:
    rest = crop.clone()
    rest[:, dy : dy + size[0], dx : dx + size[1]] = 0
    return not rest.any()


@pytest.mark.parametrize("output", ["tensor", "pil"])
def test_dataset_crop_gives_the_window_of_the_whole_image(archive: Path, output: str) -> None:
    cropped = ImageArchiveDataset(archive, device="cpu", crop=(48, 64), output=output)
    full = ImageArchiveDataset(archive, device="cpu", output="pil")
    at = [[0.3, 0.9], [0.99, 0.0], [0.5, 0.5], [0.1, 0.7], [0.6, 0.2]]
    items = cropped.get_batch(range(len(cropped)), crop_at=at)
    for i, (item, whole) in enumerate(zip(items, full.decode_batch(range(len(full))), strict=True)):
        box, (dy, dx) = crop_window(whole.width, whole.height, (48, 64), at[i])
        image = item if output == "pil" else None
        pixels = to_tensor(whole.crop(box))
        got = to_tensor(image) if image is not None else item
        assert got.shape[1:] == (48, 64) and got.shape[0] == pixels.shape[0]
        inside = got[:, dy : dy + pixels.shape[1], dx : dx + pixels.shape[2]]
        assert (inside - pixels).abs().max() <= 1 / 255 + 1e-6
        if output == "tensor" or item.mode != "P":  # a palette image is padded with index 0
            assert _padding_is_zero(got, dy, dx, pixels.shape[1:])
        if cropped.names[i] == "small.png":
            assert (dy, dx) != (0, 0)


def test_dataset_crop_is_reproducible_with_a_seed(archive: Path) -> None:
    ds = ImageArchiveDataset(archive, device="cpu", crop=32, mode="RGB")

    def epoch(seed: int) -> list[torch.Tensor]:
        """An epoch in a worker: the DataLoader seeds the worker's torch generator from its own."""
        loader = DataLoader(ds, batch_size=2, num_workers=1, generator=torch.Generator().manual_seed(seed))
        return [t for batch in loader for t in batch]

    first = epoch(1)
    assert len(first) == len(ds) and all(t.shape == (3, 32, 32) for t in first)
    assert all(torch.equal(a, b) for a, b in zip(first, epoch(1), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, epoch(2), strict=True))
    torch.manual_seed(5)  # in this process: torch's default generator, as for torchvision's RandomCrop
    one = [ds[0], ds[0]]
    assert not torch.equal(one[0], one[1])
    torch.manual_seed(5)
    assert torch.equal(one[0], ds[0]) and torch.equal(one[1], ds[0])
    with pytest.raises(AezipError, match=r"small\.png is 30x20, smaller than the crop 32x32"):
        ImageArchiveDataset(archive, device="cpu", crop=32, pad_if_needed=False)[ds.index("small.png")]


@pytest.mark.parametrize("decode_device", [None, "cpu"])
def test_loader_crops_are_a_function_of_seed_epoch_and_image(archive: Path, decode_device: str | None) -> None:
    """Both decode paths give each image the crop ``crop_positions`` places, with the pixels of the
    whole image's window, the same for any number of workers."""
    kwargs = {"batch_size": 2, "seed": 3, "crop": 40, "mode": "RGB", "decode_device": decode_device}
    loader = ArchiveLoader(archive, **kwargs)
    loader.set_epoch(1)
    order = loader.stream.indices(3, 1, 0).tolist()
    batches = [t for batch in loader for t in batch]
    assert len(batches) == len(order) and all(t.shape == (3, 40, 40) for t in batches)
    full = ImageArchiveDataset(archive, device="cpu", mode="RGB")
    for index, at, got in zip(order, crop_positions(3, 1, order), batches, strict=True):
        whole = full.decode_batch([index])[0].convert("RGB")
        box, (dy, dx) = crop_window(whole.width, whole.height, (40, 40), at)
        ref = to_tensor(whole.crop(box))
        inside = got[:, dy : dy + ref.shape[1], dx : dx + ref.shape[2]]
        assert (inside - ref).abs().max() <= 1 / 255 + 1e-6 and _padding_is_zero(got, dy, dx, ref.shape[1:])
    with_workers = ArchiveLoader(archive, num_workers=2, **kwargs)
    with_workers.set_epoch(1)
    assert all(torch.equal(a, b) for a, b in zip(batches, [t for b in with_workers for t in b], strict=True))


def test_only_the_window_is_synthesised(codec: Codec, archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The synthesis runs on the latents under the box and their halo: ceil(side / 16) + 1 + 2 · 2
    latents a side, not the whole grid (here 20 × 30 latents)."""
    shapes = []
    real = Codec._synthesize_numpy

    def spy(self: Codec, model: object, latents: np.ndarray, q: int, size: object) -> np.ndarray:
        shapes.append(latents.shape[2:])
        return real(self, model, latents, q, size)

    data = codec.encode(photo_like(320, 480, 9))
    monkeypatch.setattr(Codec, "_synthesize_numpy", spy)
    codec.decode(data, box=(200, 100, 264, 164))
    assert shapes == [(9, 9)]
    ds = ImageArchiveDataset(archive, device="cpu", crop=16)  # a.png: 7 × 8 latents
    ds.get_batch([ds.index("a.png")], crop_at=[[0.5, 0.5]])
    assert shapes[1:] == [(6, 6)]
