"""Model diagnosis benchmark: transform ceiling, PSNR and bpp per quality, gain movement.

Usage: ``python -m benchmarks.ceiling IMAGE_DIR [--model FILE ...] [--limit N] [--out FILE.json]``

Without ``--model`` it diagnoses every model aezip ships, oldest first, so the old and the new
default are compared on the same images. PSNR and bpp per quality go through the real codec
(ANS stream bytes); the ceiling and the gains come from :mod:`aezip.train.diagnose`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from aezip.model.registry import load_shipped, shipped_models
from aezip.model.weights import LoadedModel, load_model
from aezip.train.data import list_images, load_rgb
from aezip.train.diagnose import diagnose
from aezip.train.validate import validate


def report(model: LoadedModel, folder: Path, limit: int | None, per_quality: bool) -> dict:
    """Diagnosis of one model on the images of ``folder``."""
    paths = list_images(folder)[:limit]
    result = {
        "model": model.name or str(model.path),
        "sha256": model.sha256,
        "architecture": json.loads(model.config.to_json()),
        "folder": str(folder),
        **diagnose(model.net, [load_rgb(p) for p in paths]),
    }
    if per_quality:
        result["per_quality"] = validate(model, paths)
    return result


def to_markdown(reports: list[dict]) -> str:
    """One table per model: ceiling, then quality, bpp, PSNR and the gains."""
    lines = []
    for r in reports:
        arch = r["architecture"]
        lines.append(f"### {r['model']} ({arch['channels']}/{arch['bottleneck']} channels), {r['images']} images")
        ceiling = ", ".join(f"{k.replace('_', ' ')}: {v:.2f} dB" for k, v in r["ceiling_psnr"].items())
        lines += [f"Ceiling (unrounded latents): {ceiling}", ""]
        lines.append("| quality | bpp (ANS) | PSNR (dB) | log-gain mean | spread | moved from ramp |")
        lines.append("|---:|---:|---:|---:|---:|---:|")
        rows = {row["quality"]: row for row in r.get("per_quality", [])}
        for g in r["gains"]:
            pq = rows.get(g["quality"], {})
            bpp = f"{pq['bpp_ans']:.3f}" if pq else "–"
            db = f"{pq['psnr']:.2f}" if pq else "–"
            lines.append(
                f"| {g['quality']} | {bpp} | {db} | {g['log_gain_mean']:.3f} | {g['log_gain_spread']:.3f} "
                f"| {g['log_gain_moved']:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", type=Path)
    parser.add_argument("--model", type=Path, action="append", help="model file (repeat; default: every shipped model)")
    parser.add_argument("--limit", type=int, help="use only the first N images")
    parser.add_argument("--no-per-quality", action="store_true", help="skip the codec pass per quality")
    parser.add_argument("--threads", type=int, help="torch threads")
    parser.add_argument("--out", type=Path, help="write the JSON here (and the tables beside it as .md)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [load_model(p) for p in args.model] if args.model else [load_shipped(m) for m in shipped_models()]
    reports = [report(m, args.images, args.limit, not args.no_per_quality) for m in models]
    text = to_markdown(reports)
    print(text)
    if args.out:
        args.out.write_text(json.dumps(reports, indent=2) + "\n", encoding="utf-8")
        args.out.with_suffix(".md").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
