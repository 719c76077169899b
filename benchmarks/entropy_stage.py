"""Entropy stage alone: bits per pixel with zstd, with ANS, and the ideal code lengths, plus timing.

    python benchmarks/entropy_stage.py IMAGE_DIR [--model MODEL] [--out results.json]

For every image and quality the latents come from the model's analysis transform (as in
``aezip pack``); then:

* ``zstd``  — bytes of :func:`aezip.entropy.zstd_packer.encode_zstd`,
* ``ans``   — bytes of :func:`aezip.entropy.ans.encode_ans` with the model's integer tables,
* ``ideal_tables`` — the tables' code length (what a perfect coder would spend with them),
* ``ideal_prior``  — cross-entropy of the latents under the learned prior itself,

all in bits per pixel of the image, averaged over images. Encode and decode times of the two
coders are summed over the images (entropy stage only, no network).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from aezip.codec.codec import pad_to_multiple
from aezip.entropy.ans import decode_ans, encode_ans
from aezip.entropy.zstd_packer import decode_zstd, encode_zstd
from aezip.model.registry import default_model_path
from aezip.model.weights import LoadedModel, load_model
from aezip.train.data import list_images, load_rgb


def prior_bits(model: LoadedModel, q: int, latents: np.ndarray) -> float:
    """-log2 of the learned prior's probability of the integer latents."""
    with torch.no_grad():
        lik = model.net.priors[q].likelihood(torch.from_numpy(latents).float().unsqueeze(0))
    return float(-torch.log2(lik).sum())


def measure(model: LoadedModel, paths: list[Path]) -> list[dict]:
    """One row per quality: mean bpp of each method and total coder seconds."""
    images = [load_rgb(p) for p in paths]
    rows = []
    for q in range(model.config.qualities):
        tables = model.tables[q]
        acc = {k: [] for k in ("zstd", "ans", "ideal_tables", "ideal_prior")}
        t = {"zstd_encode": 0.0, "zstd_decode": 0.0, "ans_encode": 0.0, "ans_decode": 0.0}
        for img in images:
            pixels = img.shape[0] * img.shape[1]
            x = torch.from_numpy(img).permute(2, 0, 1).unsqueeze(0).float() / 255
            with torch.no_grad():
                y = model.net.analyze(pad_to_multiple(x, model.config.stride), q)
            lat = torch.round(y)[0].to(torch.int32).numpy()
            for name, enc, dec in (("zstd", encode_zstd, decode_zstd), ("ans", encode_ans, decode_ans)):
                args = () if name == "zstd" else (tables,)
                start = time.perf_counter()
                data = enc(lat, *args)
                t[f"{name}_encode"] += time.perf_counter() - start
                start = time.perf_counter()
                back = dec(data, lat.shape, *args)
                t[f"{name}_decode"] += time.perf_counter() - start
                assert np.array_equal(back, lat)
                acc[name].append(8 * len(data) / pixels)
            _, escaped = tables.symbolize(lat)
            acc["ideal_tables"].append((tables.ideal_bits(lat) + 32 * escaped.size) / pixels)
            acc["ideal_prior"].append(prior_bits(model, q, lat) / pixels)
        row = {"quality": q + 1, **{k: round(float(np.mean(v)), 4) for k, v in acc.items()}}
        row.update({k: round(v, 4) for k, v in t.items()})
        row["megapixels"] = round(sum(i.shape[0] * i.shape[1] for i in images) / 1e6, 3)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path)
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument("--out", type=Path)
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = load_model(args.model)
    rows = measure(model, list_images(args.images)[: args.limit])
    print("| q | zstd bpp | ANS bpp | ideal (tables) | ideal (prior) | zstd enc/dec s | ANS enc/dec s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['quality']} | {r['zstd']:.4f} | {r['ans']:.4f} | {r['ideal_tables']:.4f} | {r['ideal_prior']:.4f} "
            f"| {r['zstd_encode']:.3f}/{r['zstd_decode']:.3f} | {r['ans_encode']:.3f}/{r['ans_decode']:.3f} |"
        )
    if args.out:
        meta = {
            "model_sha256": model.sha256,
            "images": str(args.images),
            "machine": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
        }
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
