"""Why ``--entropy auto`` may skip the level-19 zstd frame: sizes of every method on real latents.

Usage::

    python -m benchmarks.zstd_probe ../shared/data/val --qualities 1,4,6,8 [--out FILE.md]

For each image and quality, the default model's latents are coded with zstd at the probe level
(:data:`aezip.entropy.zstd_packer.PROBE_LEVEL`) and at level 19, with ``ans`` and with ``ans-ctx``.
The table gives, per quality, the range of level-19/probe size ratios (``auto`` assumes level 19
never gets below :data:`aezip.codec.codec.ZSTD_PROBE_GAIN` of the probe) and of level-19/best-learned
ratios (how far zstd is from winning), and how often ``auto`` would have skipped level 19.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from PIL import Image

from aezip.codec.codec import ZSTD_PROBE_GAIN, Codec, prepare_any, zstd_could_win
from aezip.entropy import encode_latents
from aezip.entropy.zstd_packer import PROBE_LEVEL, encode_zstd
from aezip.model.side_files import context_tables


def sizes(image_dir: Path, qualities: list[int]) -> list[tuple[int, str, dict[str, int]]]:
    """(quality, image name, bytes per method) for every image of ``image_dir``."""
    paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in {".png", ".webp", ".jpg", ".ppm"})
    rows = []
    for q in qualities:
        codec = Codec(quality=q, device="cpu")
        model, tables = codec.model, codec.model.tables[q - 1]
        context = functools.partial(context_tables, model, q)
        for path in paths:
            latents = codec._analyze(prepare_any(Image.open(path)).rgb)
            row = {
                "probe": len(encode_zstd(latents, PROBE_LEVEL)),
                "zstd": len(encode_latents("zstd", latents, tables)),
                "ans": len(encode_latents("ans", latents, tables)),
            }
            if context() is not None:
                row["ans-ctx"] = len(encode_latents("ans-ctx", latents, tables, context))
            rows.append((q, path.name, row))
    return rows


def report(rows: list[tuple[int, str, dict[str, int]]]) -> str:
    """Markdown table of the ratios per quality."""
    lines = [
        f"zstd level 19 vs level {PROBE_LEVEL} (the probe) and vs the best learned method; `auto` codes "
        f"level 19 only when probe × {ZSTD_PROBE_GAIN} < best learned.\n",
        "| quality | images | level 19 / probe (min–max) | level 19 / best learned (min–max) | level 19 skipped |",
        "|---:|---:|---|---|---:|",
    ]
    for q in sorted({r[0] for r in rows}):
        group = [r[2] for r in rows if r[0] == q]
        gain = [r["zstd"] / r["probe"] for r in group]
        best = [min(v for k, v in r.items() if k in ("ans", "ans-ctx")) for r in group]
        lead = [r["zstd"] / b for r, b in zip(group, best, strict=True)]
        skipped = sum(not zstd_could_win(r["probe"], b) for r, b in zip(group, best, strict=True))
        lines.append(
            f"| {q} | {len(group)} | {min(gain):.3f}–{max(gain):.3f} | "
            f"{min(lead):.2f}–{max(lead):.2f} | {skipped}/{len(group)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image_dir", type=Path)
    parser.add_argument("--qualities", default="1,4,6,8")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    text = report(sizes(args.image_dir, [int(q) for q in args.qualities.split(",")]))
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
