"""Validation through the real codec: actual stream bytes per pixel and PSNR, per quality.

The numbers a model card reports are what users get: each image goes through
``Codec.encode`` / ``Codec.decode`` (ANS and zstd), not through the training-time estimate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aezip.codec.metrics import psnr
from aezip.model.weights import LoadedModel
from aezip.train.data import load_rgb


def validate(
    model: LoadedModel, paths: list[Path], qualities: list[int] | None = None, device: str = "cpu"
) -> list[dict]:
    """Mean bpp (ANS and zstd stream bytes) and mean PSNR per quality over ``paths``."""
    from aezip.codec.codec import Codec

    images = [load_rgb(p) for p in paths]
    rows = []
    for q in qualities or range(1, model.config.qualities + 1):
        ans = Codec(quality=q, model=model, entropy="ans", device=device)
        zstd = Codec(quality=q, model=model, entropy="zstd", device=device)
        bpp_ans, bpp_zstd, psnrs = [], [], []
        for img in images:
            pixels = img.shape[0] * img.shape[1]
            data = ans.encode(img)
            bpp_ans.append(8 * len(data) / pixels)
            bpp_zstd.append(8 * len(zstd.encode(img)) / pixels)
            psnrs.append(psnr(img, np.asarray(ans.decode(data))))
        rows.append(
            {
                "quality": q,
                "bpp_ans": round(float(np.mean(bpp_ans)), 4),
                "bpp_zstd": round(float(np.mean(bpp_zstd)), 4),
                "psnr": round(float(np.mean(psnrs)), 3),
                "images": len(images),
            }
        )
    return rows
