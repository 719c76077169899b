"""Image files in and out: which files the model codes, how pixels are prepared, how they go back.

Policy (also in README):

* Coded by the model: 8-bit RGB, grayscale (L) and both with alpha (RGBA, LA; also ``RGBa``
  and ``La``), single frame, in a format Pillow can write back (PNG, JPEG, WebP, TIFF, BMP,
  PPM/PGM), at most :data:`MAX_CODED_PIXELS` pixels and at least :data:`MIN_CODED_SIDE` on each
  side. Grayscale is coded as RGB with equal channels and restored as the rounded mean of the
  three decoded channels. Alpha is stored losslessly beside the latents. EXIF orientation is
  applied before coding (the orientation tag is then reset to 1 in the kept EXIF); the ICC
  profile and EXIF are kept.
* Stored losslessly (original bytes, byte-identical on unpack): everything else: palette and
  1-bit images, 16-bit and float images, CMYK/YCbCr/LAB, animations, very large and very thin images.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from aezip.errors import UnsupportedImageError

Image.MAX_IMAGE_PIXELS = 256_000_000  # refuse decompression bombs beyond this with an error

#: Extensions treated as images; every other file is stored losslessly as data.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".gif"})
#: Pillow formats the model-coded path can write back in the original format.
WRITABLE_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "TIFF", "BMP", "PPM"})
MAX_CODED_PIXELS = 64_000_000
#: Thinner images give the model no context and cost next to nothing stored exactly.
MIN_CODED_SIDE = 8
CODED_MODES = {"RGB": ("RGB", False), "L": ("L", False), "RGBA": ("RGB", True), "LA": ("L", True)}
_ORIENTATION = 0x0112


@dataclass
class Prepared:
    """An image ready for the model: RGB pixels, optional alpha, and what restores the file."""

    rgb: np.ndarray  # uint8 (H, W, 3)
    gray: bool
    alpha: np.ndarray | None  # uint8 (H, W) or None
    icc: bytes | None = None
    file_meta: dict = field(default_factory=dict)  # format, mode, exif (for the archive member)


def is_image_name(name: str) -> bool:
    """Whether a file name has an image extension (decides image vs data member)."""
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def open_image(data: bytes, name: str) -> Image.Image:
    """Open image bytes with Pillow, turning every Pillow failure into a one-line error."""
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
        return im
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnsupportedImageError(f"{name}: cannot read image ({exc})") from None


def lossless_reason(im: Image.Image) -> str | None:
    """Why this image must be stored losslessly, or None if the model can code it."""
    if getattr(im, "n_frames", 1) > 1:
        return "animated image"
    if im.format not in WRITABLE_FORMATS:
        return f"format {im.format} is not written back"
    mode = {"RGBa": "RGBA", "La": "LA"}.get(im.mode, im.mode)
    if mode not in CODED_MODES:
        return f"mode {im.mode} is kept exactly"
    if im.width * im.height > MAX_CODED_PIXELS:
        return "image too large for the model"
    if min(im.width, im.height) < MIN_CODED_SIDE:
        return f"narrower than {MIN_CODED_SIDE} pixels"
    return None


def prepare(im: Image.Image) -> Prepared:
    """Orient and convert a codable image (see :func:`lossless_reason`) for the model."""
    fmt, mode = im.format, im.mode
    exif = im.getexif()
    oriented = ImageOps.exif_transpose(im) or im
    mode = {"RGBa": "RGBA", "La": "LA"}.get(mode, mode)
    color, has_alpha = CODED_MODES[mode]
    work = oriented.convert(mode)
    alpha = np.asarray(work.getchannel("A")).copy() if has_alpha else None
    rgb = np.asarray(work.convert("RGB")).copy()
    meta: dict = {"format": fmt, "mode": mode}
    if len(exif):
        if _ORIENTATION in exif:
            exif[_ORIENTATION] = 1
        meta["exif"] = exif.tobytes().hex()
    return Prepared(rgb=rgb, gray=color == "L", alpha=alpha, icc=im.info.get("icc_profile"), file_meta=meta)


def to_pil(rgb: np.ndarray, gray: bool, alpha: np.ndarray | None, icc: bytes | None) -> Image.Image:
    """Decoded pixels → a PIL image in the coded mode (L, LA, RGB or RGBA)."""
    if gray:
        base = Image.fromarray(np.round(rgb.astype(np.float32).mean(axis=2)).astype(np.uint8), "L")
    else:
        base = Image.fromarray(rgb, "RGB")
    if alpha is not None:
        base.putalpha(Image.fromarray(alpha, "L"))
    if icc:
        base.info["icc_profile"] = icc
    return base


def encode_file(im: Image.Image, fmt: str, exif_hex: str | None = None) -> bytes:
    """Write a decoded image in ``fmt``: lossless formats losslessly, JPEG at quality 95 4:4:4."""
    out = io.BytesIO()
    kwargs: dict = {}
    if im.info.get("icc_profile"):
        kwargs["icc_profile"] = im.info["icc_profile"]
    if exif_hex and fmt in {"PNG", "JPEG", "WEBP", "TIFF"}:
        kwargs["exif"] = bytes.fromhex(exif_hex)
    if fmt == "JPEG":
        if im.mode in ("RGBA", "LA"):
            raise UnsupportedImageError("JPEG cannot hold alpha")
        kwargs.update(quality=95, subsampling=0)
    elif fmt == "WEBP":
        kwargs.update(lossless=True, exact=True)
    elif fmt == "TIFF":
        kwargs.update(compression="tiff_deflate")
    elif fmt == "PPM" and im.mode in ("RGBA", "LA"):
        raise UnsupportedImageError("PPM cannot hold alpha")
    im.save(out, format=fmt, **kwargs)
    return out.getvalue()
