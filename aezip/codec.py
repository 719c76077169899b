"""One image ⇄ bytes: the codec API.

Encode::

    image ─► prepare (orient, mode → RGB [+ alpha]) ─► pad to 2**levels ─► analysis × gain[q]
          ─► round ─► entropy coding (zstd or ANS) ─► image stream (docs/FORMAT.md)

Decode runs the same steps backwards; the integer latents it recovers are bit-exact on every
machine, only the synthesis transform's float rounding can differ between machines.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zstandard
from PIL import Image
from torch.nn import functional as F

from aezip.entropy import METHODS, NAMES, decode_latents, encode_latents
from aezip.entropy.tables import CdfTables
from aezip.entropy.zstd_packer import decompress_exact
from aezip.errors import AezipError, CorruptArchiveError, FormatError, UnsupportedImageError
from aezip.imagefile import CODED_MODES, MAX_CODED_PIXELS, Prepared, prepare, to_pil
from aezip.model.registry import ModelStore
from aezip.model.weights import LoadedModel

STREAM_MAGIC = b"\x89AEI"
STREAM_VERSION = 1
DEFAULT_QUALITY = 6
#: ``auto`` codes the latents both ways and keeps the shorter stream (same pixels either way).
ENTROPY_CHOICES = ("auto", "ans", "zstd")
DEFAULT_ENTROPY = "auto"
#: Float format of the transforms. ``bf16`` runs the convolutions in bfloat16 (GDN stays float32):
#: about twice as fast on a GPU, and the latents it produces can differ from ``fp32`` ones, so
#: encoding defaults to ``fp32``; decoding in ``bf16`` only changes pixels by float rounding.
PRECISIONS = ("fp32", "bf16")
FLAG_GRAY, FLAG_ALPHA, FLAG_ICC = 1, 2, 4
_KNOWN_FLAGS = FLAG_GRAY | FLAG_ALPHA | FLAG_ICC
_HEADER = struct.Struct("<4sBBBB16sIIHHHI")
_zstd = zstandard.ZstdCompressor(level=19)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (B, C, H, W) on the bottom and right by edge replication to multiples of ``multiple``."""
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


def pick_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
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
        self.device = pick_device(device)
        self._on_device: set[bytes] = set()

    def _net(self, model: LoadedModel) -> torch.nn.Module:
        if model.model_id not in self._on_device:
            model.net.to(self.device).eval()
            self._on_device.add(model.model_id)
        return model.net

    def encode(self, image: Any) -> bytes:
        """Compress one image (see class docstring for accepted types) to an image stream."""
        return self.encode_prepared(prepare_any(image))

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def encode_prepared(self, prep: Prepared) -> bytes:
        """Compress an image already prepared by :func:`aezip.imagefile.prepare`."""
        return self.encode_many_prepared([prep])[0]

    def encode_many(self, images: list[Any], max_batch_pixels: int = 4_000_000) -> list[bytes]:
        """Compress several images; images of equal size share one analysis pass."""
        return self.encode_many_prepared([prepare_any(image) for image in images], max_batch_pixels)

    def encode_many_prepared(self, preps: list[Prepared], max_batch_pixels: int = 4_000_000) -> list[bytes]:
        """Compress prepared images, batching the analysis by size (``max_batch_pixels`` per pass)."""
        out: list[bytes] = [b""] * len(preps)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, prep in enumerate(preps):
            groups.setdefault(prep.rgb.shape[:2], []).append(i)
        for (h, w), indices in groups.items():
            step = max(1, max_batch_pixels // (h * w))
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                latents = self._analyze([preps[i].rgb for i in chunk])
                for k, i in enumerate(chunk):
                    out[i] = self._stream(preps[i], latents[k])
        return out

    def _analyze(self, images: list[np.ndarray]) -> np.ndarray:
        """Equal-size uint8 (H, W, 3) images → integer latents (B, C, h, w)."""
        model, q = self.model, self.quality - 1
        net = self._net(model)
        x = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        with torch.inference_mode(), self._autocast():
            y = net.analyze(pad_to_multiple(x, model.config.stride), q)
        return torch.round(y.float()).to(torch.int32).cpu().numpy()

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
            alpha = _zstd.compress(np.ascontiguousarray(prep.alpha).tobytes())
            parts += [struct.pack("<I", len(alpha)), alpha]
        if prep.icc:
            parts += [struct.pack("<I", len(prep.icc)), prep.icc]
        return b"".join(parts)

    def _entropy_code(self, latents: np.ndarray, tables: CdfTables) -> tuple[str, bytes]:
        """Code latents with the chosen method; ``auto`` keeps the shorter of ANS and zstd."""
        if self.entropy != "auto":
            return self.entropy, encode_latents(self.entropy, latents, tables)
        candidates = [(m, encode_latents(m, latents, tables)) for m in METHODS]
        return min(candidates, key=lambda c: (len(c[1]), METHODS[c[0]]))

    def decode(self, data: bytes) -> Image.Image:
        """Decompress an image stream to a PIL image."""
        return self.decode_many([data])[0].to_image()

    def decode_many(self, streams: list[bytes], max_batch_pixels: int = 4_000_000) -> list[Decoded]:
        """Decode several streams, running the synthesis on batches of equal latent shape.

        Images are grouped by (model, quality, latent shape); each forward pass holds at most
        ``max_batch_pixels`` output pixels (about 64 bytes of activations per pixel per hidden
        channel at the first level), which bounds memory.
        """
        parsed = [self._parse(s) for s in streams]
        out: list[Decoded | None] = [None] * len(streams)
        for chunk, pixels in self._synthesize(parsed, max_batch_pixels):
            pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()
            for k, i in enumerate(chunk):
                header, _, _, extras = parsed[i]
                rgb = np.ascontiguousarray(pixels[k, : header.height, : header.width])
                out[i] = Decoded(rgb=rgb, gray=bool(header.flags & FLAG_GRAY), alpha=extras[0], icc=extras[1])
        return [d for d in out if d is not None]

    def decode_tensors(self, streams: list[bytes], max_batch_pixels: int = 4_000_000) -> list[torch.Tensor]:
        """Decode streams to uint8 RGB tensors (3, H, W) left on the codec's device.

        The fast path for training on a GPU: pixels never visit the CPU. Only the colour
        channels are returned (grayscale streams give three equal channels; alpha is not included).
        """
        parsed = [self._parse(s) for s in streams]
        out: list[torch.Tensor | None] = [None] * len(streams)
        for chunk, pixels in self._synthesize(parsed, max_batch_pixels):
            for k, i in enumerate(chunk):
                header = parsed[i][0]
                out[i] = pixels[k, :, : header.height, : header.width]
        return [t for t in out if t is not None]

    def _synthesize(self, parsed: list[tuple], max_batch_pixels: int) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Run the synthesis on batches of equal (model, quality, latent shape).

        Yields the stream indices of each batch and its padded uint8 pixels (B, 3, H, W) on the device.
        """
        groups: dict[tuple, list[int]] = {}
        for i, (header, model, _, _) in enumerate(parsed):
            groups.setdefault((model.model_id, header.quality, header.latent_shape), []).append(i)
        for indices in groups.values():
            model = parsed[indices[0]][1]
            q = parsed[indices[0]][0].quality - 1
            _, lh, lw = parsed[indices[0]][0].latent_shape
            per_image = lh * lw * model.config.stride**2
            step = max(1, max_batch_pixels // per_image)
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                lat = torch.from_numpy(np.stack([parsed[i][2] for i in chunk])).to(self.device, non_blocking=True)
                with torch.inference_mode(), self._autocast():
                    x_hat = self._net(model).synthesize(lat.float(), q)
                with torch.inference_mode():
                    yield chunk, x_hat.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8)

    def _parse(self, data: bytes) -> tuple[StreamHeader, LoadedModel, np.ndarray, tuple]:
        """Header, model and entropy-decoded latents of one stream (everything before synthesis)."""
        header, pos = parse_header(data)
        model = self.store.get(header.model_id)
        cfg = model.config
        expected = (cfg.bottleneck, -(-header.height // cfg.stride), -(-header.width // cfg.stride))
        if header.latent_shape != expected or not 1 <= header.quality <= cfg.qualities:
            raise CorruptArchiveError("image stream header does not match its model")
        end = pos + header.latent_bytes
        latents = decode_latents(header.entropy, data[pos:end], expected, model.tables[header.quality - 1])
        pos = end
        alpha = icc = None
        if header.flags & FLAG_ALPHA:
            raw, pos = _section(data, pos)
            alpha = np.frombuffer(decompress_exact(raw, header.width * header.height, "alpha plane"), np.uint8)
            alpha = alpha.reshape(header.height, header.width).copy()
        if header.flags & FLAG_ICC:
            icc, pos = _section(data, pos)
        if pos != len(data):
            raise CorruptArchiveError("image stream has trailing bytes")
        return header, model, latents, (alpha, icc)


def _section(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(data):
        raise CorruptArchiveError("image stream truncated")
    (n,) = struct.unpack_from("<I", data, pos)
    if pos + 4 + n > len(data):
        raise CorruptArchiveError("image stream truncated")
    return data[pos + 4 : pos + 4 + n], pos + 4 + n


def prepare_any(image: Any) -> Prepared:
    """Accept a PIL image, numpy array or torch tensor and prepare it for the model."""
    if isinstance(image, torch.Tensor):
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
