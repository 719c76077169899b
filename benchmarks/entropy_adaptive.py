"""Adaptive entropy model vs the per-channel ANS tables: bytes, decode time, BD-rate vs JPEG.

    python benchmarks/entropy_adaptive.py IMAGE_DIR [--time-images N] [--jpeg results.json] [--out table.md]

For every image and quality the image is encoded once with ``--entropy ans-ctx``; its latents
(entropy-decoded back, checked equal) are re-coded with ``ans`` into an otherwise identical
stream. Reported per quality: latent-section bits per pixel of both, the saving, entropy-decode
seconds of both (all images), and total decode seconds (``Codec.decode``, synthesis included)
of both on the first ``--time-images`` images (fastest of ``--repeats`` alternating runs), whose
decoded pixels are also compared. PSNR
comes from the ``ans-ctx`` decodes; BD-rate uses whole-stream bpp against the JPEG points of a
``benchmarks/run.py`` results file.
"""

from __future__ import annotations

import argparse
import json
import struct
import time
from pathlib import Path

import numpy as np
import torch

from aezip.codec.codec import Codec, parse_header
from aezip.codec.metrics import psnr
from aezip.entropy import METHODS, decode_latents, encode_latents
from aezip.model.side_files import context_tables
from aezip.train.data import list_images, load_rgb
from benchmarks.metrics import bd_rate


def _as_ans(stream: bytes, latents: np.ndarray, codec: Codec, quality: int) -> bytes:
    """The same stream with its latents re-coded by the per-channel ANS tables."""
    header, pos = parse_header(stream)
    body = encode_latents("ans", latents, codec.model.tables[quality - 1])
    head = bytearray(stream[:pos])
    head[5] = METHODS["ans"]
    struct.pack_into("<I", head, pos - 4, len(body))
    return bytes(head) + body + stream[pos + header.latent_bytes :]


def measure(paths: list[Path], time_images: int, repeats: int = 1) -> list[dict]:
    """One row per quality (see module docstring)."""
    images = [load_rgb(p) for p in paths]
    pixels = sum(i.shape[0] * i.shape[1] for i in images)
    rows = []
    for q in range(1, 9):
        codec = Codec(quality=q, entropy="ans-ctx", device="cpu")
        ctx = context_tables(codec.model, q)
        acc = {k: 0.0 for k in ("ans_bytes", "ctx_bytes", "ans_stream", "ctx_stream", "ans_ent_s", "ctx_ent_s")}
        acc.update(ans_total_s=0.0, ctx_total_s=0.0, timed_pixels=0, psnr=0.0)
        for i, img in enumerate(images):
            s_ctx = codec.encode(img)
            header, pos = parse_header(s_ctx)
            section = s_ctx[pos : pos + header.latent_bytes]
            start = time.perf_counter()
            lat = decode_latents(METHODS["ans-ctx"], section, header.latent_shape, codec.model.tables[q - 1], ctx)
            acc["ctx_ent_s"] += time.perf_counter() - start
            s_ans = _as_ans(s_ctx, lat, codec, q)
            h_ans, p_ans = parse_header(s_ans)
            start = time.perf_counter()
            back = decode_latents(
                METHODS["ans"], s_ans[p_ans : p_ans + h_ans.latent_bytes], h_ans.latent_shape, codec.model.tables[q - 1]
            )
            acc["ans_ent_s"] += time.perf_counter() - start
            assert np.array_equal(back, lat)
            acc["ctx_bytes"] += header.latent_bytes
            acc["ans_bytes"] += h_ans.latent_bytes
            acc["ctx_stream"] += len(s_ctx)
            acc["ans_stream"] += len(s_ans)
            start = time.perf_counter()
            out_ctx = np.asarray(codec.decode(s_ctx))
            t_ctx = time.perf_counter() - start
            acc["psnr"] += psnr(img, out_ctx) / len(images)
            if i < time_images:
                t_ans = float("inf")
                for rep in range(repeats):  # alternate the two, keep each one's fastest run
                    if rep:
                        start = time.perf_counter()
                        codec.decode(s_ctx)
                        t_ctx = min(t_ctx, time.perf_counter() - start)
                    start = time.perf_counter()
                    out_ans = np.asarray(codec.decode(s_ans))
                    t_ans = min(t_ans, time.perf_counter() - start)
                acc["ans_total_s"] += t_ans
                acc["ctx_total_s"] += t_ctx
                acc["timed_pixels"] += img.shape[0] * img.shape[1]
                assert np.array_equal(out_ans, out_ctx), "decoded pixels differ"
        row = {"quality": q, "pixels": pixels, **acc}
        for k in ("ans", "ctx"):
            row[f"{k}_bpp"] = 8 * acc[f"{k}_bytes"] / pixels
            row[f"{k}_stream_bpp"] = 8 * acc[f"{k}_stream"] / pixels
        row["saving_percent"] = 100 * (1 - acc["ctx_bytes"] / acc["ans_bytes"])
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return rows


def table(rows: list[dict], images: int, time_images: int) -> str:
    """Markdown table of the rows."""
    lines = [
        f"| q | ANS bpp | ans-ctx bpp | saving | entropy decode ANS / ans-ctx (s, {images} images) "
        f"| total decode ANS / ans-ctx (s, {time_images} images) | growth | PSNR dB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        growth = 100 * (r["ctx_total_s"] / r["ans_total_s"] - 1) if r["ans_total_s"] else float("nan")
        lines.append(
            f"| {r['quality']} | {r['ans_bpp']:.4f} | {r['ctx_bpp']:.4f} | {r['saving_percent']:.1f} % "
            f"| {r['ans_ent_s']:.3f} / {r['ctx_ent_s']:.3f} | {r['ans_total_s']:.2f} / {r['ctx_total_s']:.2f} "
            f"| {growth:+.1f} % | {r['psnr']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path)
    parser.add_argument("--time-images", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="total decodes per timed stream (fastest kept)")
    parser.add_argument("--jpeg", type=Path, help="results.json of benchmarks/run.py (JPEG points)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = list_images(args.images)[: args.limit]
    rows = measure(paths, args.time_images, args.repeats)
    text = table(rows, len(paths), min(args.time_images, len(paths)))
    if args.jpeg:
        jpeg = json.loads(args.jpeg.read_text())["rd"]["jpeg"]["points"]
        jr, jp = [p["bpp"] for p in jpeg], [p["psnr"] for p in jpeg]
        psnrs = [r["psnr"] for r in rows]
        for k, label in (("ans", "ANS"), ("ctx", "ans-ctx")):
            bd = bd_rate(jr, jp, [r[f"{k}_stream_bpp"] for r in rows], psnrs)
            text += f"\n\nBD-rate vs JPEG ({label}, stream bpp): " + (
                "n/a"
                if bd is None
                else f"{bd.percent:+.2f} % over {bd.psnr_low:.2f}-{bd.psnr_high:.2f} dB (overlap {bd.overlap:.2f})"
            )
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
