"""One image ⇄ bytes: the codec API.

Encode::

    image ─► prepare (orient, mode → RGB [+ alpha]) ─► pad to 2**levels ─► analysis × gain[q]
          ─► round ─► entropy coding (zstd or ANS) ─► image stream (docs/FORMAT.md)

Decode runs the same steps backwards; the integer latents it recovers are bit-exact on every
machine, only the synthesis transform's float rounding can differ between machines.

Both transforms run tile by tile (an image of up to :data:`TILE_LATENTS` latents a side in one
pass, a larger one in tiles of at most :data:`SPLIT_LATENTS`, each with a halo of
:data:`HALO_LATENTS` latents on each side that is computed and thrown away), so the transforms'
memory is bounded by the tile, not the image. What grows with the image is held compactly: the
uint8 pixels, the latents in the narrowest integer type that holds them (int8 in practice), and
the decoded pixels in one uint8 buffer; the entropy coders work a channel at a time.

The transforms are local: a latent depends on the input pixels within ``2·(2**levels − 1)`` px
of its ``2**levels`` px cell, an output pixel on the latents within two cells, so a halo of two
latents covers the receptive field and a tile computes exactly the same sums as the whole image.
The analysis runs the same operations in the same memory layout on every tile, with one intra-op
thread (:func:`aezip.model.inference.one_thread`): its floats, hence the rounded latents, do not
depend on tiling, batching or the machine's core count (tests check tiled against untiled
latents bit for bit). The synthesis differs from an untiled pass at most by float rounding.

Decoding on a CPU needs no PyTorch: the latents are entropy-decoded with NumPy and constriction,
and the synthesis runs in NumPy (:mod:`aezip.model.cpu_synthesis`), which spares a command line
``unpack`` the 2.5–4 s of ``import torch``. Encoding, GPUs and ``bf16`` use PyTorch, imported
when first needed.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import os
import struct
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from aezip.codec.imagefile import CODED_MODES, MAX_CODED_PIXELS, Prepared, prepare, to_pil
from aezip.entropy import METHODS, NAMES, decode_latents, encode_latents
from aezip.entropy.tables import CdfTables
from aezip.entropy.zstd_packer import PROBE_LEVEL, compressor, decompress_exact, encode_zstd
from aezip.errors import AezipError, CorruptArchiveError, FormatError, UnsupportedImageError
from aezip.model.registry import ModelStore
from aezip.model.runtime import blas_one_thread
from aezip.model.side_files import context_tables
from aezip.model.weights import LoadedModel

if TYPE_CHECKING:
    import torch

    from aezip.model.inference import InferenceModel

STREAM_MAGIC = b"\x89AEI"
STREAM_VERSION = 1
DEFAULT_QUALITY = 6
#: ``auto`` keeps the shortest stream of the methods (same pixels whichever wins; see
#: :meth:`Codec._entropy_code`). ``aezip.cli.app`` spells the same list out, so ``--help`` needs no torch.
ENTROPY_CHOICES = ("auto", "ans", "zstd", "ans-ctx")
DEFAULT_ENTROPY = "auto"
#: Float format of the transforms. ``bf16`` runs the convolutions in bfloat16 (GDN stays float32):
#: about twice as fast on a GPU, and the latents it produces can differ from ``fp32`` ones, so
#: encoding defaults to ``fp32``; decoding in ``bf16`` only changes pixels by float rounding.
PRECISIONS = ("fp32", "bf16")
#: Smallest ratio of a level-19 zstd frame to the level-:data:`PROBE_LEVEL` one that ``auto``
#: allows for (measured 0.73 at the lowest; see :meth:`Codec._entropy_code`).
ZSTD_PROBE_GAIN = 0.7
FLAG_GRAY, FLAG_ALPHA, FLAG_ICC = 1, 2, 4
_KNOWN_FLAGS = FLAG_GRAY | FLAG_ALPHA | FLAG_ICC
_HEADER = struct.Struct("<4sBBBB16sIIHHHI")
#: Side, in latents, of the largest latent grid coded in one pass (1024 px with the 4-level models):
#: Kodak-sized images and anything up to 1024 × 1024 px is one tile (about 0.45 GB of activations).
TILE_LATENTS = 64
#: Larger grids are cut into tiles of at most this side (640 px; about 0.2 GB of activations per
#: tile, measured no slower than 768 or 1024 px tiles), so that with the image's own arrays a 64 MP
#: image, or two 32 MP images coded at once by two jobs, stays under 1.5 GB (see README).
SPLIT_LATENTS = 40
#: Latents of context computed around each tile core and discarded (covers the receptive field).
HALO_LATENTS = 2
#: Integer types latents are held in between the transforms and the entropy coders, narrowest first.
LATENT_DTYPES = (np.int8, np.int16, np.int32)


def zstd_could_win(probe_bytes: int, best_bytes: int) -> bool:
    """Whether ``auto`` codes level-19 zstd, given the level-:data:`PROBE_LEVEL` latent stream's
    size and the best learned method's: only if level 19 could still come out shorter."""
    return probe_bytes * ZSTD_PROBE_GAIN < best_bytes


def latent_dtype(low: int, high: int) -> np.dtype:
    """The narrowest of :data:`LATENT_DTYPES` that holds every integer in ``low .. high``."""
    for dtype in LATENT_DTYPES:
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int32)


def compact_latents(latents: np.ndarray) -> np.ndarray:
    """Integer latents in the narrowest type that holds them (int8 for nearly every image: a quarter
    of int32's memory); the values, hence the bytes and pixels they give, do not change."""
    low, high = (int(latents.min()), int(latents.max())) if latents.size else (0, 0)
    return latents.astype(latent_dtype(low, high), copy=False)


def tiles(
    height: int, width: int, tile: int = TILE_LATENTS, split: int = SPLIT_LATENTS
) -> list[tuple[int, int, int, int]]:
    """Core tiles ``(top, bottom, left, right)`` covering a ``height`` × ``width`` latent grid.

    A grid that fits in ``tile`` × ``tile`` is one tile. A larger one is cut, each side into the
    fewest near-equal parts of at most ``min(tile, split)`` latents, so no tile is a thin sliver.
    """
    if height <= tile and width <= tile:
        return [(0, height, 0, width)]
    side = min(tile, split)

    def cuts(n: int) -> list[int]:
        parts = max(1, -(-n // side))
        return [n * k // parts for k in range(parts + 1)]

    rows, cols = cuts(height), cuts(width)
    return [
        (t, b, lf, r)
        for t, b in zip(rows[:-1], rows[1:], strict=True)
        for lf, r in zip(cols[:-1], cols[1:], strict=True)
    ]


def with_halo(tile: tuple[int, int, int, int], height: int, width: int) -> tuple[int, int, int, int]:
    """A core tile ``(top, bottom, left, right)`` grown by :data:`HALO_LATENTS` on each side, cut at
    the ``height`` × ``width`` latent grid: the latents a transform pass of that tile covers."""
    top, bottom, left, right = tile
    return (
        max(top - HALO_LATENTS, 0),
        min(bottom + HALO_LATENTS, height),
        max(left - HALO_LATENTS, 0),
        min(right + HALO_LATENTS, width),
    )


#: A region of an image in pixels, ``(left, top, right, bottom)`` as ``PIL.Image.crop`` takes it.
Box = tuple[int, int, int, int]


def check_box(box: Sequence[int], width: int, height: int) -> Box:
    """``box`` as four ints, checked to be a non-empty region inside a ``width`` × ``height`` image."""
    try:
        left, top, right, bottom = (operator.index(v) for v in box)
    except (TypeError, ValueError):
        raise AezipError(f"box must be four integers (left, top, right, bottom), got {box!r}") from None
    if not (0 <= left < right <= width and 0 <= top < bottom <= height):
        raise AezipError(f"box {tuple(box)} is not a non-empty region of the {width}x{height} image")
    return left, top, right, bottom


def latent_window(box: Box, lh: int, lw: int, stride: int) -> tuple[int, int, int, int]:
    """The latents ``(top, bottom, left, right)`` that the synthesis of the pixels in ``box`` reads.

    Those under the box and :data:`HALO_LATENTS` around them (its receptive field), on a ``lh`` ×
    ``lw`` grid of ``stride``-pixel cells. A side is ``ceil(box side / stride) + 1 + 2·halo`` latents
    wherever the box lies (moved inward at the grid's edges, cut to the grid where it is smaller),
    so the windows of equal-sized crops have one shape and are synthesised in one batch.
    """
    left, top, right, bottom = box

    def axis(start: int, stop: int, n: int) -> tuple[int, int]:
        span = min(n, -(-(stop - start) // stride) + 1 + 2 * HALO_LATENTS)
        first = min(max(start // stride - HALO_LATENTS, 0), n - span)
        return first, first + span

    return (*axis(top, bottom, lh), *axis(left, right, lw))


@dataclass
class Window:
    """The part of one image's latents that a region needs, and where the region lies in its synthesis."""

    model: LoadedModel
    q: int
    latents: np.ndarray  # (C, h, w): the latent window
    y: int  # the region's offset and size in the window's (h·stride, w·stride) pixels
    x: int
    height: int
    width: int


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (B, C, H, W) on the bottom and right by edge replication to multiples of ``multiple``."""
    from torch.nn import functional as F

    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


@dataclass
class StreamHeader:
    """The fixed fields at the start of an image stream."""

    entropy: int
    quality: int
    flags: int
    model_id: bytes
    width: int
    height: int
    latent_shape: tuple[int, int, int]
    latent_bytes: int


@dataclass
class Decoded:
    """Pixels recovered from a stream, before they become a PIL image."""

    rgb: np.ndarray
    gray: bool
    alpha: np.ndarray | None
    icc: bytes | None

    def to_image(self) -> Image.Image:
        return to_pil(self.rgb, self.gray, self.alpha, self.icc)


#: Files that exist where a GPU driver PyTorch could use is installed (NVIDIA; AMD ROCm).
GPU_DRIVER_FILES = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd")


def device_type(name: str) -> str:
    """``"cpu"`` or ``"cuda"`` for a device name, as :func:`pick_device` decides, without importing
    torch when the answer is plainly the CPU (``cpu``, or ``auto`` on a Linux machine without a GPU
    driver); anything else asks torch."""
    if name == "cpu" or (name == "auto" and sys.platform == "linux" and not any(map(os.path.exists, GPU_DRIVER_FILES))):
        return "cpu"
    return pick_device(name).type


def pick_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise AezipError(f"unknown device {name!r}; use auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise AezipError("device cuda requested but no CUDA device is available")
    return torch.device(name)


def parse_header(data: bytes) -> tuple[StreamHeader, int]:
    """Validate and parse an image stream's header; returns it and the offset of the latents."""
    if len(data) < _HEADER.size or data[:4] != STREAM_MAGIC:
        raise FormatError("not an aezip image stream")
    magic, version, entropy, quality, flags, model_id, w, h, c, lh, lw, n = _HEADER.unpack_from(data)
    if version != STREAM_VERSION:
        raise FormatError(f"image stream version {version} is not supported (this aezip reads {STREAM_VERSION})")
    if flags & ~_KNOWN_FLAGS:
        raise FormatError("image stream uses unknown flags")
    if entropy not in NAMES:
        raise CorruptArchiveError(f"unknown entropy method id {entropy}")
    if w == 0 or h == 0 or c == 0:
        raise CorruptArchiveError("image stream has an empty shape")
    if w * h > MAX_CODED_PIXELS:
        raise CorruptArchiveError(f"image stream declares {w}x{h} pixels, more than aezip ever codes")
    header = StreamHeader(entropy, quality, flags, model_id, w, h, (c, lh, lw), n)
    if _HEADER.size + n > len(data):
        raise CorruptArchiveError("image stream truncated")
    return header, _HEADER.size


class Codec:
    """Encode images to bytes and back with a learned model.

    ``quality`` runs 1..8 (8 = best); ``model`` is a model file or a loaded model (default: the
    one shipped with aezip); ``entropy`` is ``"ans"`` (learned tables), ``"zstd"``, or ``"auto"``
    (both, keeping the shorter: the decoded pixels are identical either way). Decoding
    uses whichever model the stream names, as long as it is the default or in ``models``.

    :meth:`encode` accepts a PIL image, a uint8 numpy array (H, W), (H, W, 3) or (H, W, 4), or a
    torch tensor (C, H, W) with C in 1, 3, 4 (uint8, or float in [0, 1]). :meth:`decode` returns
    a PIL image in mode L, LA, RGB or RGBA (the ICC profile, if any, in ``info``).

    ``precision`` (``"fp32"`` or ``"bf16"``, see :data:`PRECISIONS`) sets the float format of
    the transforms; ``bf16`` is meant for GPUs.
    """

    def __init__(
        self,
        quality: int = DEFAULT_QUALITY,
        device: str = "auto",
        model: str | Path | LoadedModel | None = None,
        entropy: str = DEFAULT_ENTROPY,
        models: list[str | Path | LoadedModel] | None = None,
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise AezipError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.store = ModelStore(models)
        self.model = self.store.default() if model is None else self.store.add(model)
        if not 1 <= quality <= self.model.config.qualities:
            raise AezipError(f"quality must be 1..{self.model.config.qualities}, got {quality}")
        if entropy not in ENTROPY_CHOICES:
            raise AezipError(f"entropy must be one of {', '.join(ENTROPY_CHOICES)}, got {entropy!r}")
        self.quality = quality
        self.entropy = entropy
        self.device_type = device_type(device)
        self.tile = TILE_LATENTS
        self._on_device: set[bytes] = set()
        self._fast: dict[bytes, InferenceModel] = {}
        self._lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        """The torch device of the transforms (imports torch)."""
        import torch

        return torch.device(self.device_type)

    @property
    def numpy_decoder(self) -> bool:
        """Whether decoding runs the NumPy synthesis (on the CPU in fp32) rather than PyTorch's."""
        return self.device_type == "cpu" and self.precision == "fp32"

    def _net(self, model: LoadedModel) -> torch.nn.Module:
        with self._lock:
            if model.model_id not in self._on_device:
                model.net.to(self.device).eval()
                self._on_device.add(model.model_id)
        return model.net

    def _transforms(self, model: LoadedModel) -> InferenceModel | torch.nn.Module:
        """The inference form of ``model`` (built once per codec); the training form for ``bf16``."""
        from aezip.model.inference import InferenceModel

        net = self._net(model)
        if self.precision == "bf16":
            return net
        with self._lock:
            if model.model_id not in self._fast:
                self._fast[model.model_id] = InferenceModel(net).to(self.device)
            return self._fast[model.model_id]

    def encode(
        self, image: Any, min_psnr: float | None = None, max_bpp: float | None = None, below_floor: str = "best"
    ) -> bytes:
        """Compress one image (see class docstring for accepted types) to an image stream.

        With ``min_psnr`` and/or ``max_bpp`` the quality is chosen for this image: the lowest that
        reaches ``min_psnr`` dB within ``max_bpp`` bits per pixel (see :mod:`aezip.codec.quality`; use
        :func:`aezip.codec.quality.encode_to_target` to get the measured PSNR and bpp too).
        """
        if min_psnr is None and max_bpp is None:
            return self.encode_prepared(prepare_any(image))
        from aezip.codec.quality import QualityTarget, encode_to_target

        target = QualityTarget(min_psnr=min_psnr, max_bpp=max_bpp, below_floor=below_floor)
        return encode_to_target(self, prepare_any(image), target)[0]

    def _autocast(self) -> torch.autocast:
        import torch

        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def encode_prepared(self, prep: Prepared) -> bytes:
        """Compress an image already prepared by :func:`aezip.codec.imagefile.prepare`."""
        return self.encode_many_prepared([prep])[0]

    def encode_many(self, images: list[Any], max_batch_pixels: int = 4_000_000) -> list[bytes]:
        """Compress several images; images of equal size share one analysis pass."""
        return self.encode_many_prepared([prepare_any(image) for image in images], max_batch_pixels)

    def encode_many_prepared(self, preps: list[Prepared], max_batch_pixels: int = 4_000_000) -> list[bytes]:
        """Compress prepared images, one at a time, tile by tile (``max_batch_pixels`` is kept for
        compatibility: batching would not change the bytes, and on a CPU it is not faster)."""
        return [self._stream(prep, self._analyze(prep.rgb)) for prep in preps]

    def _analyze(self, image: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) image → integer latents (C, h, w), tile by tile, with one intra-op thread.

        The latents are held in the narrowest integer type that fits them (see :func:`compact_latents`).

        Each tile is the edge-replicated image region of its core plus halo (cut at the padded
        image's border, where the convolutions' own zero padding takes over, as for the whole image),
        in the layout the untiled path uses (float32, channels_last), so its sums are the same.
        """
        import torch

        from aezip.model.inference import one_thread

        model, q = self.model, self.quality - 1
        transforms = self._transforms(model)
        stride = model.config.stride
        h, w = image.shape[:2]
        lh, lw = -(-h // stride), -(-w // stride)
        latents = np.empty((model.config.bottleneck, lh, lw), dtype=LATENT_DTYPES[0])  # widened if a tile needs it
        with one_thread(), torch.inference_mode(), self._autocast():
            for top, bottom, left, right in tiles(lh, lw, self.tile):
                t0, t1, l0, l1 = with_halo((top, bottom, left, right), lh, lw)
                if t1 * stride <= h and l1 * stride <= w:
                    crop = image[t0 * stride : t1 * stride, l0 * stride : l1 * stride]
                else:  # past the bottom or right edge: replicate the last row / column
                    rows = np.minimum(np.arange(t0 * stride, t1 * stride), h - 1)
                    cols = np.minimum(np.arange(l0 * stride, l1 * stride), w - 1)
                    crop = image[np.ix_(rows, cols)]
                x = torch.from_numpy(np.stack([crop])).to(self.device)  # exactly the untiled layout and strides
                x = x.permute(0, 3, 1, 2).float().div_(255.0)
                y = transforms.analyze(x, q)[0, :, top - t0 : bottom - t0, left - l0 : right - l0]
                part = torch.round(y.float()).to(torch.int32).cpu().numpy()
                wide = latent_dtype(int(part.min()), int(part.max())) if part.size else latents.dtype
                if wide.itemsize > latents.dtype.itemsize:
                    latents = latents.astype(wide)
                latents[:, top:bottom, left:right] = part
        return latents

    def _stream(self, prep: Prepared, latents: np.ndarray) -> bytes:
        """Entropy-code one image's latents and assemble its image stream."""
        model = self.model
        h, w = prep.rgb.shape[:2]
        method, body = self._entropy_code(latents, model.tables[self.quality - 1])
        flags = (FLAG_GRAY if prep.gray else 0) | (FLAG_ALPHA if prep.alpha is not None else 0)
        flags |= FLAG_ICC if prep.icc else 0
        c, lh, lw = latents.shape
        parts = [
            _HEADER.pack(
                STREAM_MAGIC,
                STREAM_VERSION,
                METHODS[method],
                self.quality,
                flags,
                model.model_id,
                w,
                h,
                c,
                lh,
                lw,
                len(body),
            ),
            body,
        ]
        if prep.alpha is not None:
            alpha = compressor().compress(np.ascontiguousarray(prep.alpha).tobytes())
            parts += [struct.pack("<I", len(alpha)), alpha]
        if prep.icc:
            parts += [struct.pack("<I", len(prep.icc)), prep.icc]
        return b"".join(parts)

    def _entropy_code(self, latents: np.ndarray, tables: CdfTables) -> tuple[str, bytes]:
        """Code latents with the chosen method; ``auto`` keeps the shortest of all (same pixels).

        ``auto`` codes with the learned methods first, then estimates zstd at level
        :data:`PROBE_LEVEL` (a few ms) and pays for the level-19 frame (about 0.2 s per Kodak
        image) only if it could still win: level 19 is never below :data:`ZSTD_PROBE_GAIN` of the
        level-3 size on latents (0.73–0.91 over 16 val photos × 4 qualities), and on photos the
        learned methods win by 13–42 % (``benchmarks/results/zstd-probe.md``).
        """
        context = functools.partial(context_tables, self.model, self.quality)  # side file read on first use
        if self.entropy != "auto":
            return self.entropy, encode_latents(self.entropy, latents, tables, context)
        learned = [m for m in METHODS if m != "zstd" and (m != "ans-ctx" or context() is not None)]
        candidates = [(m, encode_latents(m, latents, tables, context)) for m in learned]
        best = min(len(body) for _, body in candidates)
        if zstd_could_win(len(encode_zstd(latents, PROBE_LEVEL)), best):
            candidates.append(("zstd", encode_latents("zstd", latents, tables, context)))
        return min(candidates, key=lambda c: (len(c[1]), METHODS[c[0]]))

    def decode(self, data: bytes, box: Sequence[int] | None = None) -> Image.Image:
        """Decompress an image stream to a PIL image; with ``box`` (see :meth:`decode_many`) only that region."""
        return self.decode_many([data], boxes=None if box is None else [box])[0].to_image()

    def decode_many(
        self,
        streams: list[bytes],
        max_batch_pixels: int = 4_000_000,
        boxes: Sequence[Sequence[int] | None] | None = None,
    ) -> list[Decoded]:
        """Decode several streams, running the synthesis on batches of equal latent shape.

        Images are grouped by (model, quality, latent shape); each forward pass holds at most
        ``max_batch_pixels`` output pixels (about 64 bytes of activations per pixel per hidden
        channel at the first level), which bounds memory. On the CPU (fp32) this needs no torch.

        ``boxes`` (one per stream: ``(left, top, right, bottom)`` in pixels, as ``PIL.Image.crop``
        takes it, or None for the whole image) decodes only those regions, alpha included: the
        latents are entropy-decoded whole, but the synthesis runs only on the latents under each box
        and their halo (:func:`latent_window`), so a 256² crop of a 1 MP photo costs a tenth of the
        image. The pixels are those of the whole image, cropped, up to float rounding (one level).
        """
        parsed = [self._parse(s) for s in streams]
        if boxes is not None:
            return self._decode_regions(parsed, boxes, max_batch_pixels)
        out: list[Decoded | None] = [None] * len(streams)
        for chunk, args in self._batches(parsed, max_batch_pixels):
            if self.numpy_decoder:
                rgb = [self._synthesize_numpy(*args)]
            else:
                rgb = self._synthesize_tiled(*args).permute(0, 2, 3, 1).cpu().numpy()  # a tiled image: no copy
            for k, i in enumerate(chunk):
                header, _, _, extras = parsed[i]
                image = np.ascontiguousarray(rgb[k][: header.height, : header.width])
                out[i] = Decoded(rgb=image, gray=bool(header.flags & FLAG_GRAY), alpha=extras[0], icc=extras[1])
        return [d for d in out if d is not None]

    def _decode_regions(
        self, parsed: list[tuple], boxes: Sequence[Sequence[int] | None], max_batch_pixels: int
    ) -> list[Decoded]:
        """:meth:`decode_many` with ``boxes``: the region of each stream, through :meth:`_synthesize_windows`."""
        if len(boxes) != len(parsed):
            raise AezipError(f"{len(boxes)} boxes for {len(parsed)} streams")
        regions = [self._region(p, box) for p, box in zip(parsed, boxes, strict=True)]
        out: list[Decoded | None] = [None] * len(parsed)
        for i, pixels in self._synthesize_windows([w for w, _ in regions], max_batch_pixels):
            header, _, _, (alpha, icc) = parsed[i]
            left, top, right, bottom = regions[i][1]
            rgb = pixels if isinstance(pixels, np.ndarray) else pixels.permute(1, 2, 0).cpu().numpy()
            alpha = None if alpha is None else np.ascontiguousarray(alpha[top:bottom, left:right])
            out[i] = Decoded(np.ascontiguousarray(rgb), bool(header.flags & FLAG_GRAY), alpha, icc)
        return [d for d in out if d is not None]

    def _region(self, parsed: tuple, box: Sequence[int] | None) -> tuple[Window, Box]:
        """The latent window of a parsed stream for ``box`` (None: the whole image), and the box checked."""
        header, model, latents, _ = parsed
        region = check_box((0, 0, header.width, header.height) if box is None else box, header.width, header.height)
        return window(model, header.quality - 1, latents, region), region

    def _synthesize_windows(self, windows: list[Window], max_batch_pixels: int) -> Iterator[tuple[int, Any]]:
        """Synthesise latent windows, batched by (model, quality, window shape) as :meth:`_batches` does.

        Yields each window's index and the uint8 pixels of its region: (h, w, 3) NumPy arrays from
        the NumPy decoder, (3, h, w) tensors on the device from PyTorch.
        """
        groups: dict[tuple, list[int]] = {}
        for i, w in enumerate(windows):
            groups.setdefault((w.model.model_id, w.q, w.latents.shape), []).append(i)
        for indices in groups.values():
            first = windows[indices[0]]
            _, lh, lw = first.latents.shape
            stride = first.model.config.stride
            one_tile = lh <= self.tile and lw <= self.tile and self.device_type != "cpu"
            step = max(1, max_batch_pixels // (lh * lw * stride**2)) if one_tile else 1
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                latents = np.stack([windows[i].latents for i in chunk])
                if self.numpy_decoder:
                    batch = [self._synthesize_numpy(first.model, latents, first.q, None)]
                else:
                    batch = self._synthesize_tiled(first.model, latents, first.q)
                for k, i in enumerate(chunk):
                    w = windows[i]
                    pixels = batch[k]
                    if self.numpy_decoder:
                        yield i, pixels[w.y : w.y + w.height, w.x : w.x + w.width]
                    else:
                        yield i, pixels[:, w.y : w.y + w.height, w.x : w.x + w.width]

    def decode_tensors(
        self,
        streams: list[bytes],
        max_batch_pixels: int = 4_000_000,
        boxes: Sequence[Sequence[int] | None] | None = None,
    ) -> list[torch.Tensor]:
        """Decode streams to uint8 RGB tensors (3, H, W) left on the codec's device.

        The fast path for training on a GPU: pixels never visit the CPU. Only the colour
        channels are returned (grayscale streams give three equal channels; alpha is not included).
        ``boxes`` decodes only those regions, as for :meth:`decode_many`.
        """
        parsed = [self._parse(s) for s in streams]
        if boxes is not None:
            import torch

            if len(boxes) != len(parsed):
                raise AezipError(f"{len(boxes)} boxes for {len(parsed)} streams")
            windows = [self._region(p, box)[0] for p, box in zip(parsed, boxes, strict=True)]
            tensors: list[Any] = [None] * len(parsed)
            for i, pixels in self._synthesize_windows(windows, max_batch_pixels):
                if isinstance(pixels, np.ndarray):
                    pixels = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
                tensors[i] = pixels
            return tensors
        out: list[torch.Tensor | None] = [None] * len(streams)
        for chunk, pixels in self._synthesize(parsed, max_batch_pixels):
            for k, i in enumerate(chunk):
                header = parsed[i][0]
                out[i] = pixels[k, :, : header.height, : header.width]
        return [t for t in out if t is not None]

    def _synthesize(self, parsed: list[tuple], max_batch_pixels: int) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Run the synthesis on batches of equal (model, quality, latent shape), tile by tile.

        Yields the stream indices of each batch and its uint8 pixels (B, 3, H, W) on the device:
        padded to whole latents, or cropped to the image for a batch of one (always, on the CPU).
        A tiled image from PyTorch is a view of a buffer laid out channels last (``permute(0, 2, 3,
        1)`` gives it back without a copy); the NumPy decoder's pixels are copied to (1, 3, H, W).
        """
        import torch

        for chunk, args in self._batches(parsed, max_batch_pixels):
            if self.numpy_decoder:
                yield chunk, torch.from_numpy(self._synthesize_numpy(*args)).permute(2, 0, 1).contiguous()[None]
            else:
                yield chunk, self._synthesize_tiled(*args)

    def _batches(self, parsed: list[tuple], max_batch_pixels: int) -> Iterator[tuple[list[int], tuple]]:
        """Batches of equal (model, quality, latent shape): stream indices and the synthesis's arguments
        ``(model, latents (B, C, h, w), quality index, image size or None)``.

        Images that fit in one tile are batched (``max_batch_pixels`` output pixels per pass; on a
        CUDA device only: a CPU decodes one image per pass); larger ones go one at a time.
        """
        groups: dict[tuple, list[int]] = {}
        for i, (header, model, _, _) in enumerate(parsed):
            groups.setdefault((model.model_id, header.quality, header.latent_shape), []).append(i)
        for indices in groups.values():
            model = parsed[indices[0]][1]
            q = parsed[indices[0]][0].quality - 1
            _, lh, lw = parsed[indices[0]][0].latent_shape
            one_tile = lh <= self.tile and lw <= self.tile and self.device_type != "cpu"
            step = max(1, max_batch_pixels // (lh * lw * model.config.stride**2)) if one_tile else 1
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                if len(chunk) == 1:  # no copy of a large image's latents
                    header = parsed[chunk[0]][0]
                    lat, size = parsed[chunk[0]][2][None], (header.height, header.width)
                else:
                    lat, size = np.stack([parsed[i][2] for i in chunk]), None
                yield chunk, (model, lat, q, size)

    def _passes(self, lh: int, lw: int, stride: int, height: int, width: int) -> list[tuple[tuple[slice, ...], ...]]:
        """The synthesis passes over a ``lh`` × ``lw`` latent grid, one per tile: for each, the latent
        rows and columns it reads (core and halo), the pixels of its output kept (the core's, cut at
        ``height`` × ``width``) and where they go in the image."""
        passes = []
        for top, bottom, left, right in tiles(lh, lw, self.tile):
            t0, t1, l0, l1 = with_halo((top, bottom, left, right), lh, lw)
            rows = min(bottom * stride, height) - top * stride
            cols = min(right * stride, width) - left * stride
            y0, x0 = (top - t0) * stride, (left - l0) * stride
            passes.append(
                (
                    (slice(t0, t1), slice(l0, l1)),
                    (slice(y0, y0 + rows), slice(x0, x0 + cols)),
                    (slice(top * stride, top * stride + rows), slice(left * stride, left * stride + cols)),
                )
            )
        return passes

    def _synthesize_numpy(
        self, model: LoadedModel, latents: np.ndarray, q: int, size: tuple[int, int] | None
    ) -> np.ndarray:
        """Integer latents (1, C, h, w) → uint8 pixels (H, W, 3), with NumPy and one BLAS thread.

        (H, W) is ``size``, else the padded grid's. The only full-size allocation is the output;
        each tile's activations are freed before the next tile runs.
        """
        synthesis = model.cpu_synthesis()
        stride = model.config.stride
        _, _, lh, lw = latents.shape
        height, width = size or (lh * stride, lw * stride)
        out = np.empty((height, width, 3), dtype=np.uint8)
        with blas_one_thread():
            for (rows, cols), crop, target in self._passes(lh, lw, stride, height, width):
                x = synthesis(latents[0, :, rows, cols], q)[crop]
                np.clip(x, 0.0, 1.0, out=x)
                x *= 255.0
                out[target] = np.rint(x, out=x)
                del x
        return out

    def _cpu_one_thread(self) -> contextlib.AbstractContextManager:
        """On the CPU, one intra-op thread: decoded pixels then depend neither on the thread count nor
        on batching (CPU images are decoded one per pass; two threads on one image measured no faster)."""
        from aezip.model.inference import one_thread

        return one_thread() if self.device_type == "cpu" else contextlib.nullcontext()

    def _synthesize_tiled(
        self, model: LoadedModel, latents: np.ndarray, q: int, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Integer latents (B, C, h, w) → uint8 pixels (B, 3, H, W) on the device, with PyTorch.

        (H, W) is ``size`` (the image's own) or the padded (h·stride, w·stride).
        Several tiles are written into one uint8 buffer laid out channels last, cropped to ``size``:
        the only full-size allocation; each tile's activations are freed before the next tile runs.
        """
        import torch

        transforms = self._transforms(model)
        stride = model.config.stride
        b, _, lh, lw = latents.shape
        height, width = size or (lh * stride, lw * stride)
        passes = self._passes(lh, lw, stride, height, width)
        out = None
        with torch.inference_mode(), self._cpu_one_thread():
            if len(passes) > 1:
                out = torch.empty((b, height, width, 3), dtype=torch.uint8, device=self.device)
            for (rows, cols), (crop_y, crop_x), (dst_y, dst_x) in passes:
                lat = torch.from_numpy(np.ascontiguousarray(latents[:, :, rows, cols])).to(self.device)
                with self._autocast():
                    x_hat = transforms.synthesize(lat.float(), q)
                del lat
                pixels = x_hat[:, :, crop_y, crop_x].float().clamp_(0, 1).mul_(255).round_().to(torch.uint8)
                del x_hat
                if out is None:
                    return pixels.contiguous()
                out[:, dst_y, dst_x].copy_(pixels.permute(0, 2, 3, 1))
                del pixels
        assert out is not None
        return out.permute(0, 3, 1, 2)

    def _parse(self, data: bytes) -> tuple[StreamHeader, LoadedModel, np.ndarray, tuple]:
        """Header, model and entropy-decoded latents of one stream (everything before synthesis)."""
        header, pos = parse_header(data)
        model = self.store.get(header.model_id)
        cfg = model.config
        expected = (cfg.bottleneck, -(-header.height // cfg.stride), -(-header.width // cfg.stride))
        if header.latent_shape != expected or not 1 <= header.quality <= cfg.qualities:
            raise CorruptArchiveError("image stream header does not match its model")
        end = pos + header.latent_bytes
        context = functools.partial(context_tables, model, header.quality)  # read only for ans-ctx streams
        latents = decode_latents(header.entropy, data[pos:end], expected, model.tables[header.quality - 1], context)
        latents = compact_latents(latents)  # held until the synthesis: int8 where int32 was
        pos = end
        alpha = icc = None
        if header.flags & FLAG_ALPHA:
            raw, pos = _section(data, pos)
            alpha = decompress_exact(raw, header.width * header.height, "alpha plane")
            alpha = alpha.reshape(header.height, header.width)
        if header.flags & FLAG_ICC:
            icc, pos = _section(data, pos)
        if pos != len(data):
            raise CorruptArchiveError("image stream has trailing bytes")
        return header, model, latents, (alpha, icc)


def window(model: LoadedModel, q: int, latents: np.ndarray, box: Box) -> Window:
    """The :class:`Window` of an image's latents (C, h, w) that the synthesis of ``box`` needs."""
    stride = model.config.stride
    _, lh, lw = latents.shape
    t0, t1, l0, l1 = latent_window(box, lh, lw, stride)
    left, top, right, bottom = box
    part = latents[:, t0:t1, l0:l1]
    return Window(model, q, part, top - t0 * stride, left - l0 * stride, bottom - top, right - left)


def _section(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(data):
        raise CorruptArchiveError("image stream truncated")
    (n,) = struct.unpack_from("<I", data, pos)
    if pos + 4 + n > len(data):
        raise CorruptArchiveError("image stream truncated")
    return data[pos + 4 : pos + 4 + n], pos + 4 + n


def prepare_any(image: Any) -> Prepared:
    """Accept a PIL image, numpy array or torch tensor and prepare it for the model."""
    torch = sys.modules.get("torch")  # an object can only be a tensor once torch is loaded
    if torch is not None and isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.is_floating_point():
            t = (t.clamp(0, 1) * 255).round().to(torch.uint8)
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            raise UnsupportedImageError("tensor must have shape (C, H, W) with C in 1, 3, 4")
        image = t.permute(1, 2, 0).numpy().squeeze(-1) if t.shape[0] == 1 else t.permute(1, 2, 0).numpy()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise UnsupportedImageError(f"array must be uint8, got {image.dtype}")
        modes = {2: "L", 3: "RGB", 4: "RGBA"}
        channels = 2 if image.ndim == 2 else image.shape[-1] if image.ndim == 3 else 0
        if channels not in modes:
            raise UnsupportedImageError("array must have shape (H, W), (H, W, 3) or (H, W, 4)")
        image = Image.fromarray(np.ascontiguousarray(image), modes[channels])
    if not isinstance(image, Image.Image):
        raise UnsupportedImageError(f"cannot encode a {type(image).__name__}")
    mode = {"RGBa": "RGBA", "La": "LA"}.get(image.mode, image.mode)
    if mode not in CODED_MODES:
        raise UnsupportedImageError(f"mode {image.mode} is not coded by the model; convert it or store it losslessly")
    if image.width < 1 or image.height < 1:
        raise UnsupportedImageError("image is empty")
    return prepare(image)
