"""A PyTorch dataset over the images of an ``.aez`` archive, for training straight from the archive.

Which members are items: every IMAGE member (coded by the model) and every RAW member whose name
has an image extension (:data:`aezip.codec.imagefile.IMAGE_SUFFIXES`: images ``aezip pack`` stored
losslessly, such as palette PNGs, 16-bit images or GIFs, whose first frame is used), in archive
order. Other members (labels, CSV files, ...) are not items but stay readable by name with
:meth:`ImageArchiveDataset.read_bytes`, so a ``target`` callable can pair images with labels.

An item is exactly the image ``aezip unpack --format png`` restores for that member, as a tensor
or a PIL image; with ``crop``, a random window of it, of which only that part is synthesised.
Coded images are decoded in batches: :meth:`ImageArchiveDataset.get_batch` (and ``__getitems__``,
which ``DataLoader`` calls with ``batch_size > 1``) runs the synthesis once per group of images
with equal latent shape, each forward pass bounded by ``max_batch_pixels``.

Processes: the dataset pickles without its file handle or network; each DataLoader worker opens
its own handle and loads its own decoder on first use (fork- and spawn-safe).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from operator import index as as_index
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from aezip.archive.container import MemberInfo, MemberKind
from aezip.codec.codec import Box, Codec, parse_header
from aezip.codec.imagefile import is_image_name
from aezip.errors import AezipError
from aezip.model.runtime import keep_freed_memory, one_blas_thread
from aezip.store.sharded import open_archive

#: Output pixels per synthesis forward pass (the default of :meth:`aezip.Codec.decode_many`).
#: Peak activation memory of a pass is about 240 bytes per output pixel (float32, measured on
#: CPU with the default 64-channel model), so 4 Mpx ≈ 1 GiB; lower it for small GPUs.
DEFAULT_MAX_BATCH_PIXELS = 4_000_000
#: Images decoded together by :meth:`ImageArchiveDataset.iter_images`.
DEFAULT_CHUNK = 16
OUTPUTS = ("tensor", "pil")

Transform = Callable[[Any], Any]
Target = Callable[[str, "ImageArchiveDataset"], Any]
#: Where a crop lands in the image: two numbers in [0, 1), vertical then horizontal (see :func:`crop_window`).
CropAt = Sequence[float]


def crop_size(crop: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``crop`` as (height, width): an int is a square, a pair is (height, width) as torchvision's."""
    if crop is None:
        return None
    size = (crop, crop) if isinstance(crop, int) else tuple(crop)
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise AezipError(f"crop must be a positive int or (height, width), got {crop!r}")
    return size[0], size[1]


def crop_window(
    width: int, height: int, size: tuple[int, int], at: CropAt, pad_if_needed: bool = True, name: str = "image"
) -> tuple[Box, tuple[int, int]]:
    """The random crop of ``size`` (height, width) of a ``width`` × ``height`` image that ``at`` picks.

    As torchvision's ``RandomCrop(size, pad_if_needed=...)``: each offset is uniform over the valid
    ones (``at`` maps [0, 1) onto them); a side shorter than the crop is padded on both sides by
    the difference first (with ``pad_if_needed``; else :class:`AezipError`). Returns the box of
    image pixels inside the window and where its top-left corner lies in the crop (0, 0 unless padded).
    """
    placed = []
    for n, c, u in ((height, size[0], at[0]), (width, size[1], at[1])):
        pad = max(c - n, 0) if pad_if_needed else 0
        if n + 2 * pad < c:
            raise AezipError(
                f"{name} is {width}x{height}, smaller than the crop {size[1]}x{size[0]} (use pad_if_needed=True)"
            )
        start = min(int(float(u) * (n + 2 * pad - c + 1)), n + 2 * pad - c) - pad
        placed.append((max(start, 0), min(start + c, n), max(-start, 0)))
    (top, bottom, dy), (left, right, dx) = placed
    return (left, top, right, bottom), (dy, dx)


def pad_tensor(pixels: torch.Tensor, size: tuple[int, int], offset: tuple[int, int]) -> torch.Tensor:
    """A crop's pixels (C, h, w) on a zero tensor of ``size`` (height, width) at ``offset`` (top, left),
    as torchvision's ``pad_if_needed`` pads a tensor; the tensor itself when it fills the crop."""
    if tuple(pixels.shape[1:]) == size:
        return pixels
    canvas = pixels.new_zeros((pixels.shape[0], *size))
    canvas[:, offset[0] : offset[0] + pixels.shape[1], offset[1] : offset[1] + pixels.shape[2]] = pixels
    return canvas


def pad_crop(image: Image.Image, size: tuple[int, int], offset: tuple[int, int]) -> Image.Image:
    """``image`` (a crop) on a zero-filled canvas of ``size`` (height, width) at ``offset`` (top, left),
    as torchvision's ``pad_if_needed`` fills with 0; the image itself when it already fills the crop."""
    if image.size == (size[1], size[0]):
        return image
    canvas = Image.new(image.mode, (size[1], size[0]))
    if image.mode in ("P", "PA"):  # the padding is index 0, as torchvision pads a palette image
        canvas.putpalette(image.getpalette(rawmode="RGBA"), rawmode="RGBA")
    canvas.paste(image, (offset[1], offset[0]))
    for key in ("icc_profile", "transparency"):
        if key in image.info:
            canvas.info[key] = image.info[key]
    return canvas


def is_dataset_image(info: MemberInfo) -> bool:
    """Whether a member is a dataset item: a coded image, or a RAW member with an image extension."""
    return info.kind == MemberKind.IMAGE or (info.kind == MemberKind.RAW and is_image_name(info.name))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image as float32 (C, H, W) in [0, 1], like torchvision's ``ToTensor``.

    Channels follow the mode: L → 1, LA → 2, RGB → 3, RGBA → 4. Other modes (only losslessly
    stored images have them) are mapped first: 1 → L; P → RGBA if it has a transparent colour,
    else RGB; PA, RGBa → RGBA; La → LA; CMYK, YCbCr, LAB, HSV → RGB; 16-bit and 32-bit integer
    grayscale (I;16*, I) → 1 channel divided by 65535; F → 1 channel, values unchanged.
    """
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        values = np.array(image, dtype=np.float32)
        if mode != "F":
            values /= 65535.0
        return torch.from_numpy(values).unsqueeze(0)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert({"1": "L", "La": "LA", "PA": "RGBA", "RGBa": "RGBA"}.get(mode, "RGB"))
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
    pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1).contiguous()
    return pixels.to(torch.float32).div_(255.0)


class ImageArchiveDataset(Dataset):
    """Map-style dataset of the images in an ``.aez`` archive (see the module docstring).

    ``path`` may also be a sharded dataset (its ``manifest.json`` or folder): items are then the
    images of every shard, in manifest order; and an fsspec URL (``s3://…``, with ``storage_options``),
    read by range requests.

    ``dataset[i]`` is the ``i``-th image member in archive order (``dataset.names[i]``), as

    * ``output="tensor"`` (default): float32 CPU tensor (C, H, W) in [0, 1], C = 1 for grayscale,
      2 for grayscale with alpha, 3 for RGB, 4 for RGBA (see :func:`to_tensor`);
    * ``output="pil"``: a PIL image in mode L, LA, RGB or RGBA (losslessly stored images keep
      their own mode, e.g. P).

    ``mode`` (e.g. ``"RGB"``) converts every image with ``PIL.Image.convert`` first, so all items
    have the same channel count. ``transform`` is then applied to the tensor or PIL image (any
    torchvision transform that accepts it). With ``target``, items are ``(image, target(name,
    dataset))``; the callable can read label members with :meth:`read_bytes`.

    ``crop`` (an int, or (height, width)) makes each item a random window of that size, chosen
    before the synthesis, which then runs only on the latents under it (and a halo of two: see
    :meth:`aezip.Codec.decode_many`): the pixels are those of the whole image cropped (up to float
    rounding, one level), at a fraction of the cost. ``mode`` and ``transform`` then apply to the
    crop. The window is uniform over the image as torchvision's ``RandomCrop`` picks it, drawn
    from torch's random generator (so ``torch.manual_seed`` and a DataLoader's ``generator`` or
    worker seeds make it reproducible); a side shorter than the crop is padded with zeros as
    ``RandomCrop(pad_if_needed=True)`` does, or with ``pad_if_needed=False`` is an error.

    ``device``: ``"auto"`` decodes on CUDA in the main process when available and on the CPU in
    DataLoader workers (CUDA cannot be used in workers forked after CUDA was initialised); ``"cuda"``
    or ``"cpu"`` force it everywhere. For GPU decoding, use ``num_workers=0`` and ``batch_size > 1``
    so each batch is one batched pass; for CPU decoding, use workers. ``max_batch_pixels`` bounds
    the output pixels of each synthesis pass (hence its memory, see
    :data:`DEFAULT_MAX_BATCH_PIXELS`). ``models`` lists extra model files, as for ``aezip.open``.

    With the ``spawn`` start method, ``transform`` and ``target`` must be picklable (no lambdas).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        transform: Transform | None = None,
        target: Target | None = None,
        output: str = "tensor",
        mode: str | None = None,
        device: str = "auto",
        models: Sequence[str | Path] | None = None,
        max_batch_pixels: int = DEFAULT_MAX_BATCH_PIXELS,
        storage_options: dict | None = None,
        crop: int | Sequence[int] | None = None,
        pad_if_needed: bool = True,
    ) -> None:
        if output not in OUTPUTS:
            raise AezipError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if device not in ("auto", "cpu", "cuda"):
            raise AezipError(f"unknown device {device!r}; use auto, cpu or cuda")
        if max_batch_pixels < 1:
            raise AezipError("max_batch_pixels must be positive")
        self.models = list(models or [])
        self.archive = open_archive(path, device=device, models=self.models, storage_options=storage_options)
        self.transform = transform
        self.target = target
        self.output = output
        self.mode = mode
        self.device = device
        self.max_batch_pixels = max_batch_pixels
        self.crop = crop_size(crop)
        self.pad_if_needed = pad_if_needed
        self._members = [m for m in self.archive.members if is_dataset_image(m)]
        self._positions = {m.name: i for i, m in enumerate(self._members)}
        self._codec: Codec | None = None
        self._codec_pid = 0

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_codec"] = None
        return state

    def __repr__(self) -> str:
        return f"ImageArchiveDataset({self.archive.path!r}, images={len(self)}, output={self.output!r})"

    def __len__(self) -> int:
        return len(self._members)

    @property
    def names(self) -> list[str]:
        """Member names of the items, in item (archive) order."""
        return [m.name for m in self._members]

    @property
    def members(self) -> list[MemberInfo]:
        """Index records of the items, in item order."""
        return list(self._members)

    @property
    def codec(self) -> Codec:
        """This process's decoder, created on first use (a forked worker makes its own)."""
        if self._codec is None or self._codec_pid != os.getpid():
            device = self.device
            if get_worker_info() is not None:
                keep_freed_memory()  # a DataLoader worker exists to decode: see aezip.model.runtime
                one_blas_thread()
                device = "cpu" if device == "auto" else device
            self._codec = Codec(device=device, models=self.models)
            self._codec_pid = os.getpid()
        return self._codec

    def read_bytes(self, name: str, fmt: str = "original") -> bytes:
        """Bytes of any member by name (labels, or an image file as ``aezip unpack`` writes it)."""
        return self.archive.read_bytes(name, fmt)

    def read_text(self, name: str, encoding: str = "utf-8") -> str:
        """A text member (e.g. a labels file) by name."""
        return self.read_bytes(name).decode(encoding)

    def index(self, name: str) -> int:
        """Item index of an image member (ValueError if it is not an item)."""
        try:
            return self._positions[name]
        except KeyError:
            raise ValueError(f"{name!r} is not an image of {self.archive.path}") from None

    def decode_batch(self, indices: Sequence[int], crop_at: Sequence[CropAt] | None = None) -> list[Image.Image]:
        """Images at ``indices`` as PIL images (no ``mode``/``transform``), coded ones in one batched decode.

        With ``crop``, each is its crop window; ``crop_at`` (one pair in [0, 1) per index, see
        :func:`crop_window`) places the windows, else they are drawn from torch's generator.
        """
        if self.crop is None:
            return [im for im, _ in self._decode(indices, None)]
        return [pad_crop(im, self.crop, offset) for im, offset in self._decode(indices, crop_at)]

    def crop_window(self, name: str, width: int, height: int, at: CropAt) -> tuple[Box, tuple[int, int]]:
        """The crop window of member ``name`` (``width`` × ``height``) for ``at`` (see :func:`crop_window`)."""
        assert self.crop is not None
        return crop_window(width, height, self.crop, at, self.pad_if_needed, f"{self.archive.path}: {name}")

    def _decode(
        self, indices: Sequence[int], crop_at: Sequence[CropAt] | None
    ) -> list[tuple[Image.Image, tuple[int, int]]]:
        """Images at ``indices`` (cropped to their windows with ``crop``, not padded) and each one's
        offset in its crop."""
        infos = [self._members[self._check(i)] for i in indices]
        if self.crop is not None and crop_at is None:
            crop_at = torch.rand((len(infos), 2), dtype=torch.float64).tolist()
        if crop_at is not None and len(crop_at) != len(infos):
            raise AezipError(f"{len(crop_at)} crop positions for {len(infos)} images")
        coded = [k for k, info in enumerate(infos) if info.kind == MemberKind.IMAGE]
        images: list[tuple[Image.Image, tuple[int, int]] | None] = [None] * len(infos)
        if coded:
            streams = self.archive.payloads([infos[k].name for k in coded])
            boxes: list[Box] | None = None
            offsets = [(0, 0)] * len(coded)
            if self.crop is not None and crop_at is not None:
                windows = []
                for k, stream in zip(coded, streams, strict=True):
                    header = parse_header(stream)[0]
                    windows.append(self.crop_window(infos[k].name, header.width, header.height, crop_at[k]))
                boxes, offsets = [w[0] for w in windows], [w[1] for w in windows]
            crops = {} if boxes is None else {"boxes": boxes}
            decoded = self.codec.decode_many(streams, max_batch_pixels=self.max_batch_pixels, **crops)
            for k, d, offset in zip(coded, decoded, offsets, strict=True):
                images[k] = (d.to_image(), offset)
        for k, info in enumerate(infos):
            if images[k] is None:
                images[k] = self._raw(info.name, None if crop_at is None else crop_at[k])
        return [im for im in images if im is not None]

    def _raw(self, name: str, at: CropAt | None) -> tuple[Image.Image, tuple[int, int]]:
        """A losslessly stored image, cropped to its window with ``crop``, and its offset in the crop."""
        image = self.archive.image(name)
        if self.crop is None or at is None:
            return image, (0, 0)
        box, offset = self.crop_window(name, image.width, image.height, at)
        return image.crop(box), offset

    def get_batch(self, indices: Sequence[int], crop_at: Sequence[CropAt] | None = None) -> list[Any]:
        """Items at ``indices`` (as ``dataset[i]`` gives them), decoded in one batched pass; ``crop_at``
        places the crop windows (see :meth:`decode_batch`)."""
        indices = [self._check(i) for i in indices]
        decoded = self._decode(indices, crop_at)
        return [self._item(i, im, offset) for i, (im, offset) in zip(indices, decoded, strict=True)]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """Batched fetch: PyTorch ≥ 2.2 DataLoaders call this with a whole batch of indices."""
        return self.get_batch(indices)

    def __getitem__(self, index: int) -> Any:
        return self.get_batch([index])[0]

    def iter_images(self, start: int = 0, stop: int | None = None, chunk: int = DEFAULT_CHUNK) -> Iterator[Any]:
        """Items ``start..stop`` in archive order, read sequentially and decoded ``chunk`` at a time."""
        stop = len(self) if stop is None else min(stop, len(self))
        chunk = max(chunk, 1)
        for first in range(max(start, 0), stop, chunk):
            yield from self.get_batch(range(first, min(first + chunk, stop)))

    def as_iterable(self, chunk: int = DEFAULT_CHUNK) -> ImageArchiveIterableDataset:
        """This dataset as an ``IterableDataset`` for streaming reads (see that class)."""
        return ImageArchiveIterableDataset(self, chunk)

    def _check(self, i: int) -> int:
        i = as_index(i)
        n = len(self._members)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} images")
        return i % n

    def _item(self, i: int, image: Image.Image, offset: tuple[int, int] = (0, 0)) -> Any:
        if self.mode is not None and image.mode != self.mode:
            image = image.convert(self.mode)
        out: Any = to_tensor(image) if self.output == "tensor" else image
        if self.crop is not None:  # after the mode, as a RandomCrop transform pads
            out = pad_tensor(out, self.crop, offset) if self.output == "tensor" else pad_crop(out, self.crop, offset)
        if self.transform is not None:
            out = self.transform(out)
        if self.target is None:
            return out
        return out, self.target(self._members[i].name, self)


class ImageArchiveIterableDataset(IterableDataset):
    """The items of an :class:`ImageArchiveDataset` in archive order, read sequentially.

    Each DataLoader worker takes one contiguous share of the items (worker ``k`` of ``n`` gets
    items ``k*N//n .. (k+1)*N//n``) and decodes it ``chunk`` images at a time, so reads go
    forward through the file. The DataLoader interleaves the workers' outputs.
    """

    def __init__(self, dataset: ImageArchiveDataset, chunk: int = DEFAULT_CHUNK) -> None:
        self.dataset = dataset
        self.chunk = chunk

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[Any]:
        n = len(self.dataset)
        worker = get_worker_info()
        start, stop = 0, n
        if worker is not None:
            start, stop = n * worker.id // worker.num_workers, n * (worker.id + 1) // worker.num_workers
        return self.dataset.iter_images(start, stop, self.chunk)
