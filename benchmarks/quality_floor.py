"""Per-image PSNR floor against one fixed quality: bytes needed to bring every image to a floor.

Usage: ``python -m benchmarks.quality_floor IMAGE_DIR --min-psnr 32 [--out FILE.json]``

Every image is coded at every quality with the real encoder and decoder (the table the floor
search of :mod:`aezip.codec.quality` bisects). Reported: the total stream bytes when each image gets
the lowest quality reaching the floor (what ``aezip pack --min-psnr`` picks; the table checks that
PSNR rises with quality for every image, which makes bisection exact), beside the total of the
smallest single quality that brings every image to the floor.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from aezip.codec.codec import Codec
from aezip.codec.imagefile import prepare
from aezip.codec.quality import _trial
from aezip.train.data import list_images


def run(folder: Path, min_psnr: float, limit: int | None) -> dict:
    """The per-image table and both totals."""
    from PIL import Image

    codec = Codec(device="cpu")
    qualities = range(1, codec.model.config.qualities + 1)
    rows = []
    for path in list_images(folder)[:limit]:
        with Image.open(path) as im:
            prep = prepare(im.convert("RGB"))
        trials = {q: _trial(codec, prep, q) for q in qualities}
        rows.append(
            {
                "name": path.name,
                "bytes": {q: len(t[0]) for q, t in trials.items()},
                "psnr": {q: round(t[1], 3) for q, t in trials.items()},
            }
        )
        print(path.name, [round(t[1], 2) for t in trials.values()], flush=True)
    monotone = all(all(r["psnr"][q] <= r["psnr"][q + 1] for q in qualities if q + 1 in r["psnr"]) for r in rows)
    chosen = []
    for r in rows:
        ok = [q for q in qualities if r["psnr"][q] >= min_psnr]
        chosen.append(ok[0] if ok else max(qualities))
    below = [r["name"] for r, q in zip(rows, chosen, strict=True) if r["psnr"][q] < min_psnr]
    floor_bytes = sum(r["bytes"][q] for r, q in zip(rows, chosen, strict=True))
    fixed = [q for q in qualities if all(r["psnr"][q] >= min_psnr for r in rows)]
    fixed_q = fixed[0] if fixed else None
    return {
        "folder": str(folder),
        "min_psnr": min_psnr,
        "images": len(rows),
        "psnr_monotone_in_quality": monotone,
        "floor": {
            "bytes": floor_bytes,
            "qualities": chosen,
            "below_floor": below,
            "min_psnr": min(r["psnr"][q] for r, q in zip(rows, chosen, strict=True)),
        },
        "fixed": {"quality": fixed_q, "bytes": sum(r["bytes"][fixed_q] for r in rows) if fixed_q else None},
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", type=Path)
    parser.add_argument("--min-psnr", type=float, default=32.0)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = run(args.images, args.min_psnr, args.limit)
    summary = {k: v for k, v in result.items() if k != "rows"}
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
