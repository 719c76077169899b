"""The benchmark's image set: reference pixels, file sizes, and the file aezip packs for each image.

Every codec sees the same reference: the image EXIF-oriented and converted to 8-bit RGB.
aezip packs the original file when it would code it as plain RGB (so the archive is what a
user gets); otherwise (grayscale, alpha, palette, rotated, formats it stores losslessly) it
packs a PNG of the reference pixels, and the image's ``aezip_input`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from aezip.archive.container import MemberKind
from aezip.archive.pack import collect
from aezip.codec.imagefile import is_image_name, lossless_reason, open_image

_ORIENTATION = 0x0112


@dataclass
class BenchImage:
    """One image of the set."""

    name: str
    path: Path
    rgb: np.ndarray
    file_bytes: int
    aezip_path: Path
    aezip_input: str

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def raw_bytes(self) -> int:
        """Size as raw 24-bit RGB."""
        return self.pixels * 3


def image_files(folder: Path) -> list[tuple[str, Path]]:
    """(name, path) of the files under ``folder`` that aezip treats as images, in pack order."""
    return [(e.name, e.path) for e in collect(folder).entries if e.kind == MemberKind.RAW and is_image_name(e.name)]


def load_images(folder: Path, workdir: Path, limit: int | None = None) -> list[BenchImage]:
    """Read the images of ``folder`` (the first ``limit`` in name order); non-RGB ones get a PNG in ``workdir``."""
    files = image_files(folder)[:limit] if limit else image_files(folder)
    if not files:
        raise SystemExit(f"no image files under {folder}")
    images = []
    for index, (name, path) in enumerate(files):
        data = path.read_bytes()
        im = open_image(data, name)
        rgb = np.asarray((ImageOps.exif_transpose(im) or im).convert("RGB")).copy()
        plain = im.mode == "RGB" and lossless_reason(im) is None and im.getexif().get(_ORIENTATION, 1) == 1
        if plain:
            aezip_path, how = path, "original"
        else:
            aezip_path = workdir / f"{index:05d}_{Path(name).stem}.png"
            Image.fromarray(rgb, "RGB").save(aezip_path)
            how = "rgb_png"
        images.append(BenchImage(name, path, rgb, len(data), aezip_path, how))
    return images
