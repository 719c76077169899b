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
  The bit depth comes from the file (:func:`declared_depth`): Pillow opens 16-bit RGB PNGs in mode
  ``RGB``, and any image whose samples are not 8 bits is kept exact.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from aezip.errors import CorruptArchiveError, UnsupportedImageError

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
#: Largest EXIF block kept (a JPEG APP1 segment holds 65,533 bytes with its "Exif\0\0" prefix).
MAX_EXIF_BYTES = 65_533
#: Largest ICC profile restored (JPEG spreads one over at most 255 APP2 segments of 65,519 bytes).
MAX_ICC_BYTES = 255 * 65_519
DEFAULT_JPEG_QUALITY = 95
#: zlib level of restored PNGs. Over the 24 decoded Kodak images and 6 val photos, level 1 wrote
#: 4 % more bytes than Pillow's default 6 in 27 % of the time (1.1 s vs 4.1 s), and level 6 was
#: the largest single cost of ``aezip unpack`` after the synthesis.
PNG_COMPRESS_LEVEL = 1
_EXIF_PREFIXES = (b"Exif\x00\x00II*\x00", b"Exif\x00\x00MM\x00*")
#: Pillow's own exceptions for input it cannot handle (besides OSError subclasses).
_PIL_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError, EOFError)


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


def _read_failure(name: str, exc: BaseException) -> UnsupportedImageError:
    """A one-line error for an image Pillow cannot read (never Pillow's ``<_io.BytesIO …>`` text)."""
    if isinstance(exc, UnidentifiedImageError):
        return UnsupportedImageError(f"{name}: not a readable image (unknown or damaged format)")
    detail = str(exc).split("\n")[0] or type(exc).__name__
    return UnsupportedImageError(f"{name}: cannot read image ({detail})")


def open_image(data: bytes, name: str) -> Image.Image:
    """Open image bytes with Pillow, turning every Pillow failure into a one-line error."""
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
        return im
    except (*_PIL_ERRORS, Image.DecompressionBombError) as exc:
        raise _read_failure(name, exc) from None


def identify(path: str | os.PathLike[str], name: str) -> str | None:
    """Read an image file and say why it must be stored losslessly, or None when the model codes it.

    An image the model would code is decoded in full, so a file damaged past its header (a
    truncated JPEG) is found here, before anything is encoded; one stored byte for byte needs
    only its header. Raises UnsupportedImageError for a file Pillow cannot read, OSError (with
    its ``filename``) for a file that cannot be read at all.
    """
    with open(path, "rb") as fh:
        data = fh.read()
    im, reason = examine(data, name, scaled=True)
    if im is not None:
        im.close()
    return reason


def examine(data: bytes, name: str, *, scaled: bool = False) -> tuple[Image.Image | None, str | None]:
    """Open image bytes: ``(image, None)`` decoded in full when the model codes it, else ``(image or
    None, why it is stored byte for byte)`` with the pixels not decoded; UnsupportedImageError when
    Pillow cannot read it (header or pixels).

    ``scaled`` (a check, not a decode for coding) decodes a JPEG at 1/8 of its size: every byte of
    its stream is still read, so damage is found, in 1/64 of the memory (a full 64 MP decode here
    left the allocator holding some 250 MB through the encoding that follows).
    """
    try:
        im = Image.open(io.BytesIO(data))
    except (*_PIL_ERRORS, Image.DecompressionBombError) as exc:
        depth = declared_depth(data) if data.startswith(b"\xff\xd8") else None
        if depth is not None:  # a 12- or 16-bit JPEG: Pillow cannot open it, but the file is kept as it is
            return None, _depth_reason(depth)
        raise _read_failure(name, exc) from None
    try:
        reason = lossless_reason(im, data)
        if reason is None and scaled and im.format == "JPEG":
            im.draft(im.mode, (-(-im.width // 8), -(-im.height // 8)))
            im.load()
        elif reason is None:
            im.load()
            reason = lossless_reason(im, data)
    except (*_PIL_ERRORS, Image.DecompressionBombError) as exc:
        im.close()
        raise _read_failure(name, exc) from None
    return im, reason


#: The PNG signature and the JPEG start-of-frame markers, whose segment gives the sample precision.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def declared_depth(data: bytes, im: Image.Image | None = None) -> tuple[int, str] | None:
    """Bits per sample a file declares, and where, when they are not 8; None for 8 or not known.

    Pillow opens 16-bit RGB and RGBA PNGs and TIFFs, and PPMs with a maxval above 255, in 8-bit
    modes (and 12-bit JPEGs not at all), so a check of the mode alone would code them lossily and
    restore 8 bits; 2- and 4-bit grayscale opens as 8-bit ``L``. Read from the PNG IHDR, the JPEG
    SOF precision, the PPM/PGM maxval, the BMP bit count and (through Pillow, as the IFD can lie
    anywhere in the file) the TIFF BitsPerSample.
    """
    found: tuple[int, str] | None = None
    if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) > 24:
        found = data[24], f"PNG bit depth {data[24]}"
    elif data.startswith(b"\xff\xd8"):
        precision = _jpeg_precision(data)
        found = (precision, f"JPEG precision {precision}") if precision else None
    elif data[:2] in (b"P2", b"P3", b"P5", b"P6"):
        maxval = _pnm_maxval(data)
        found = (maxval.bit_length(), f"maxval {maxval}") if maxval and maxval != 255 else None
    elif data.startswith(b"BM") and len(data) >= 30:
        header = int.from_bytes(data[14:18], "little")
        count = int.from_bytes(data[24:26] if header == 12 else data[28:30], "little")
        found = (5, "BMP 16 bits per pixel") if count == 16 else None
    elif im is not None and im.format == "TIFF":
        bits = im.tag_v2.get(258)
        bits = tuple(bits) if isinstance(bits, tuple | list) else (bits,) if isinstance(bits, int) else ()
        odd = [b for b in bits if b != 8]
        found = (max(odd), f"TIFF BitsPerSample {max(odd)}") if odd else None
    return found if found is not None and found[0] != 8 else None


def _depth_reason(depth: tuple[int, str]) -> str:
    return f"{depth[0]}-bit samples ({depth[1]})"


def _jpeg_precision(data: bytes) -> int | None:
    """The sample precision of a JPEG's first start-of-frame segment, or None if none comes before the scan."""
    pos = 2
    while pos + 4 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_SOF:
            return data[pos + 4] if pos + 4 < len(data) else None
        if marker == 0xDA:  # start of scan: no frame header before it
            return None
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _pnm_maxval(data: bytes) -> int | None:
    """The maxval of a PGM/PPM header (magic, width, height, maxval; ``#`` comments), or None."""
    tokens: list[bytes] = []
    pos = 2
    while len(tokens) < 3 and pos < min(len(data), 4096):
        byte = data[pos : pos + 1]
        if byte == b"#":
            end = data.find(b"\n", pos)
            pos = len(data) if end < 0 else end + 1
        elif byte.isspace():
            pos += 1
        else:
            end = pos
            while end < len(data) and not data[end : end + 1].isspace() and data[end : end + 1] != b"#":
                end += 1
            tokens.append(data[pos:end])
            pos = end
    if len(tokens) < 3 or not tokens[2].isdigit():
        return None
    return int(tokens[2])


#: Why images in these Pillow modes are stored byte for byte (other modes: see :func:`lossless_reason`).
_MODE_REASONS = {"P": "palette", "PA": "palette", "1": "1-bit", "F": "float samples"}


def lossless_reason(im: Image.Image, data: bytes | None = None) -> str | None:
    """Why this image must be stored losslessly, or None if the model can code it.

    ``data`` (the file's bytes) lets the bit depth the file declares be checked (see
    :func:`declared_depth`); without it, only what Pillow exposes is. The reason starts with a
    short label (see :func:`reason_label`): ``animation``, ``palette``, ``16-bit samples``, ``too large``…
    """
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        return f"animation ({frames} frames)"
    if im.mode in _MODE_REASONS:
        return f"{_MODE_REASONS[im.mode]} (mode {im.mode})"
    depth = declared_depth(data or b"", im)
    if depth is not None:
        return _depth_reason(depth)
    if im.format not in WRITABLE_FORMATS:
        return f"format {im.format} (not written back)"
    mode = {"RGBa": "RGBA", "La": "LA"}.get(im.mode, im.mode)
    if mode not in CODED_MODES:
        if mode.startswith("I;16"):
            return f"16-bit samples (mode {im.mode})"
        if mode == "I":
            return "32-bit samples (mode I)"
        return f"{mode} colour" if mode in ("CMYK", "YCbCr", "LAB", "HSV") else f"mode {mode}"
    pixels = im.width * im.height
    if pixels > MAX_CODED_PIXELS:
        return f"too large ({pixels / 1e6:.1f} MP, over {MAX_CODED_PIXELS // 1_000_000} MP)"
    if min(im.width, im.height) < MIN_CODED_SIDE:
        return f"too small ({im.width}×{im.height} px, under {MIN_CODED_SIDE} px a side)"
    return None


def reason_label(reason: str) -> str:
    """The short label a lossless reason starts with (``palette``, ``16-bit samples``…), for counting."""
    return reason.split(":", 1)[0].split(" (", 1)[0]


def prepare(im: Image.Image) -> Prepared:
    """Orient and convert a codable image (see :func:`lossless_reason`) for the model.

    No full-size copy is made that is not needed: an image already upright and in its coded mode
    is read as it is, and pixels are copied out a strip of rows at a time.
    """
    fmt, mode = im.format, im.mode
    exif = im.getexif()
    upright = exif.get(_ORIENTATION, 1) not in range(2, 9)  # what exif_transpose leaves as it is
    oriented = im if upright else ImageOps.exif_transpose(im)
    mode = {"RGBa": "RGBA", "La": "LA"}.get(mode, mode)
    color, has_alpha = CODED_MODES[mode]
    work = oriented if oriented.mode == mode else oriented.convert(mode)
    alpha = pixel_array(work.getchannel("A")) if has_alpha else None
    rgb = pixel_array(work if work.mode == "RGB" else work.convert("RGB"))
    meta: dict = {"format": fmt, "mode": mode}
    if len(exif):
        if _ORIENTATION in exif:
            exif[_ORIENTATION] = 1
        meta["exif"] = exif.tobytes().hex()
    return Prepared(rgb=rgb, gray=color == "L", alpha=alpha, icc=im.info.get("icc_profile"), file_meta=meta)


def pixel_array(im: Image.Image) -> np.ndarray:
    """A writable uint8 array of an ``L`` or ``RGB`` image, copied a strip of rows at a time.

    ``np.asarray(im)`` goes through a full-size ``tobytes`` (and ``.copy()`` another, to be
    writable); this holds only the array and one strip of about 16 MB besides the image.
    """
    shape = (im.height, im.width, 3) if im.mode == "RGB" else (im.height, im.width)
    out = np.empty(shape, dtype=np.uint8)
    rows = max(1, (16 << 20) // (4 * max(im.width, 1)))
    for top in range(0, im.height, rows):
        bottom = min(top + rows, im.height)
        out[top:bottom] = np.asarray(im.crop((0, top, im.width, bottom)))
    return out


def to_pil(rgb: np.ndarray, gray: bool, alpha: np.ndarray | None, icc: bytes | None) -> Image.Image:
    """Decoded pixels → a PIL image in the coded mode (L, LA, RGB or RGBA)."""
    if gray:
        # The rounded mean of the three channels, in integers: (s + 1) // 3 is round(s / 3) for every
        # sum s (s / 3 is never halfway), without the float copies of the image a mean would make.
        total = rgb.sum(axis=2, dtype=np.uint16)
        total += 1
        total //= 3
        base = Image.fromarray(total.astype(np.uint8), "L")
    else:
        base = Image.fromarray(rgb, "RGB")
    if alpha is not None:
        base.putalpha(Image.fromarray(alpha, "L"))
    if icc:
        base.info["icc_profile"] = icc
    return base


def check_file_meta(meta: dict, name: str) -> tuple[str, str, bytes | None]:
    """Validate an IMAGE member's metadata: (format, mode, EXIF bytes or None), or CorruptArchiveError.

    Only the formats aezip writes back, the coded modes and a well-formed, bounded EXIF block
    get through; the archive is hostile input and its metadata reaches Pillow.
    """
    fmt, mode, exif_hex = meta.get("format", "PNG"), meta.get("mode"), meta.get("exif")
    if not isinstance(fmt, str) or fmt not in WRITABLE_FORMATS:
        raise CorruptArchiveError(f"{name}: metadata names a format aezip does not restore ({str(fmt)[:20]!r})")
    if mode is not None and (not isinstance(mode, str) or mode not in CODED_MODES):
        raise CorruptArchiveError(f"{name}: metadata names an unknown image mode ({str(mode)[:20]!r})")
    if exif_hex is None:
        return fmt, mode or "", None
    if not isinstance(exif_hex, str) or len(exif_hex) > 2 * MAX_EXIF_BYTES:
        raise CorruptArchiveError(f"{name}: metadata has an invalid or oversized EXIF block")
    try:
        exif = bytes.fromhex(exif_hex)
    except ValueError:
        raise CorruptArchiveError(f"{name}: metadata has an EXIF block that is not hex") from None
    if not exif.startswith(_EXIF_PREFIXES):
        raise CorruptArchiveError(f"{name}: metadata has an EXIF block without a TIFF header")
    return fmt, mode or "", exif


#: The keys a RAW member's metadata may hold (docs/FORMAT.md, "RAW members").
RAW_META_KEYS = frozenset({"lossless"})
#: What ``aezip list`` says of a RAW member whose metadata is empty: a file without an image extension.
NOT_AN_IMAGE = "not an image"


def check_raw_meta(meta: dict, name: str) -> str:
    """Validate a RAW member's metadata and say why it was stored as it is, or CorruptArchiveError.

    The metadata is empty (a data file: :data:`NOT_AN_IMAGE`) or ``{"lossless": REASON}`` with
    REASON the text that starts with a label (see :func:`reason_label`); any other key or type is refused.
    """
    unknown = sorted(set(meta) - RAW_META_KEYS)
    if unknown:
        raise CorruptArchiveError(f"{name}: metadata of a stored file has an unknown key ({unknown[0][:20]!r})")
    reason = meta.get("lossless", NOT_AN_IMAGE)
    if not isinstance(reason, str) or not reason:
        raise CorruptArchiveError(f"{name}: metadata of a stored file gives no reason as text")
    return reason


def encode_file(
    im: Image.Image, fmt: str, exif_hex: str | bytes | None = None, jpeg_quality: int = DEFAULT_JPEG_QUALITY
) -> bytes:
    """Write a decoded image in ``fmt``: lossless formats losslessly, JPEG at ``jpeg_quality``, 4:4:4."""
    out = io.BytesIO()
    kwargs: dict = {}
    if im.info.get("icc_profile"):
        kwargs["icc_profile"] = im.info["icc_profile"]
    if exif_hex and fmt in {"PNG", "JPEG", "WEBP", "TIFF"}:
        kwargs["exif"] = bytes.fromhex(exif_hex) if isinstance(exif_hex, str) else exif_hex
    if fmt == "JPEG":
        if im.mode in ("RGBA", "LA"):
            raise UnsupportedImageError("JPEG cannot hold alpha")
        kwargs.update(quality=jpeg_quality, subsampling=0)
    elif fmt == "WEBP":
        kwargs.update(lossless=True, exact=True)
    elif fmt == "TIFF":
        kwargs.update(compression="tiff_deflate")
    elif fmt == "PNG":
        kwargs.update(compress_level=PNG_COMPRESS_LEVEL)
    elif fmt == "PPM" and im.mode in ("RGBA", "LA"):
        raise UnsupportedImageError("PPM cannot hold alpha")
    im.save(out, format=fmt, **kwargs)
    return out.getvalue()
