"""Write the results: ``results.json`` (everything), ``results.md`` (tables) and the RD plots.

The JSON is strict (no NaN or Infinity: such values become null). The Markdown and plots are
made from the same dictionary, so they never disagree with the JSON.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

JSON_NAME = "results.json"
MARKDOWN_NAME = "results.md"
PLOTS = {
    "psnr_bpp": "rd_psnr_bpp.png",
    "psnr_ratio": "rd_psnr_ratio.png",
    "msssim_bpp": "rd_msssim_bpp.png",
}


def strict_json(value: Any) -> Any:
    """A copy with non-finite floats replaced by None (standard JSON has no NaN/Infinity)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def write_json(results: dict, out: Path) -> Path:
    """``results.json`` in ``out``."""
    path = out / JSON_NAME
    path.write_text(json.dumps(strict_json(results), indent=1, allow_nan=False) + "\n")
    return path


def _f(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def _header(results: dict) -> list[str]:
    env, s = results["environment"], results["settings"]
    m, v, model = env["machine"], env["versions"], env["model"]
    gpus = ", ".join(g["name"] for g in m["gpus"]) or "none"
    return [
        "# aezip benchmark",
        "",
        f"- **Date (UTC):** {env['date_utc']} · run took {_f(results['elapsed_s'], 0)} s"
        f" · git {str(env['git']['commit'])[:12]}{' (dirty)' if env['git']['dirty'] else ''}",
        f"- **Images:** {s['n_images']} from `{s['image_dir']}` ({_f(s['megapixels'], 2)} MP)"
        f"{' · quick run' if s['quick'] else ''}",
        f"- **Machine:** {m['cpu']}, {m['usable_cpus']} usable CPUs, torch threads {m['torch_threads']},"
        f" GPU: {gpus}; load average at start {m['load_average']}",
        f"- **Versions:** aezip {v['aezip']}, torch {v['torch']}, Pillow {v['pillow']}"
        f" (libjpeg-turbo {v['libjpeg_turbo']}, libwebp {v['libwebp']}, libavif {v['libavif']}"
        f" [{v['libavif_codecs']}]), pillow-jxl-plugin {v['pillow_jxl_plugin']},"
        f" zstd {v['libzstd']} (CLI: {v['zstd_cli']})",
        f"- **Model:** sha256 `{model['sha256']}`, exported {model['exported']},"
        f" {model['steps']} steps, {_f(model['train_seconds'], 0)} s of training",
        f"- **aezip rate:** {s['aezip_rate']}",
        "",
    ]


def _rd_table(results: dict) -> list[str]:
    lines = [
        "## Rate–distortion",
        "",
        "bpp and PSNR are averaged over images; ratios are total input ÷ total stored bytes.",
        "",
        "| codec | quality | bpp | ratio vs raw RGB | ratio vs files | PSNR (dB) | MS-SSIM | enc MP/s | dec MP/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for curve in results["rd"].values():
        for p in curve["points"]:
            lines.append(
                f"| {curve['label']} | {p['quality']} | {_f(p['bpp'], 3)} | {_f(p['ratio_raw'], 1)} |"
                f" {_f(p['ratio_files'], 2)} | {_f(p['psnr'])} | {_f(p['ms_ssim'], 4)} |"
                f" {_f(p['encode_mp_s'])} | {_f(p['decode_mp_s'])} |"
            )
    return [*lines, ""]


def _bd_table(results: dict) -> list[str]:
    lines = [
        f"## BD-rate against JPEG (PSNR, {results['settings']['bd_method']} interpolation)",
        "",
        "Negative = fewer bits than JPEG for the same PSNR, averaged over the PSNR range both curves cover.",
        "",
        "| codec | BD-rate | common PSNR range (dB) | overlap |",
        "|---|---:|---:|---:|",
    ]
    for key, bd in results["bd_rate_vs_jpeg"].items():
        label = results["rd"][key]["label"]
        if bd is None:
            lines.append(f"| {label} | – (curves do not overlap) | – | – |")
        else:
            lo, hi = bd["psnr_range_db"]
            lines.append(f"| {label} | {bd['bd_rate_percent']:+.1f} % | {lo:.2f}–{hi:.2f} | {bd['overlap']:.0%} |")
    return [*lines, ""]


def _speed_table(results: dict) -> list[str]:
    speed = results.get("speed")
    if not speed:
        return []
    lines = [
        "## Speed",
        "",
        f"{speed['images']} images × {speed['repeats']} repeat(s), codecs interleaved image by image;"
        f" in memory (array → bytes → array). aezip entropy: {speed['aezip_entropy']}.",
        "",
        "| codec | device | threads | batch | quality | encode MP/s | decode MP/s | enc ÷ JPEG | dec ÷ JPEG |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    jpeg = speed["entries"].get("jpeg")
    for e in speed["entries"].values():
        enc_ratio = dec_ratio = None
        if jpeg:
            if e["encode_mp_s"] and jpeg["encode_mp_s"]:
                enc_ratio = e["encode_mp_s"] / jpeg["encode_mp_s"]
            if e["decode_mp_s"] and jpeg["decode_mp_s"]:
                dec_ratio = e["decode_mp_s"] / jpeg["decode_mp_s"]
        lines.append(
            f"| {e['codec']} | {e['device']} | {e['threads']} | {e['batch']} | {e['quality']} |"
            f" {_f(e['encode_mp_s'])} | {_f(e['decode_mp_s'])} | {_f(enc_ratio, 3)} | {_f(dec_ratio, 3)} |"
        )
    return [*lines, ""]


def _dataset_table(results: dict) -> list[str]:
    ds = results.get("dataset")
    if not ds:
        return []
    subset = f" (only its first {ds['only_images']} images, copied)" if ds.get("only_images") else ""
    lines = [
        "## Whole folder",
        "",
        f"`{ds['folder']}`{subset}, timed as separate processes (aezip's times include Python and model start-up).",
        "",
        "| tool | files (images) | bytes in | stored | ratio | pack s | pack img/s | unpack s | unpack img/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in (ds["aezip"], ds["tar_zstd"]):
        lines.append(
            f"| {row['tool']} | {row['files']} ({row['images']}) | {_size(row['bytes_in'])} |"
            f" {_size(row['bytes_stored'])} | {_f(row['ratio'])} | {_f(row['pack_s'])} |"
            f" {_f(row['pack_images_s'])} | {_f(row['unpack_s'])} | {_f(row['unpack_images_s'])} |"
        )
    lines += ["", f"- aezip: `{ds['aezip']['command']}`", f"- tar+zstd: `{ds['tar_zstd']['command']}`", ""]
    return lines


def write_markdown(results: dict, out: Path) -> Path:
    """``results.md`` in ``out``: header, RD table, BD-rates, speed, whole-folder figures, plots."""
    lines = _header(results) + _rd_table(results) + _bd_table(results) + _speed_table(results)
    lines += _dataset_table(results)
    lines += ["## Plots", ""] + [f"![{key}]({name})" for key, name in PLOTS.items()] + [""]
    skipped = results["settings"].get("skipped_codecs") or {}
    if skipped:
        lines += ["Skipped codecs: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()), ""]
    path = out / MARKDOWN_NAME
    path.write_text("\n".join(lines))
    return path


def write_plots(results: dict, out: Path) -> list[Path]:
    """PSNR vs bpp, PSNR vs compression ratio (against raw RGB) and MS-SSIM vs bpp, one line per codec."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    axes_of = {
        "psnr_bpp": ("bpp", "psnr", "bits per pixel", "PSNR (dB, RGB)", False),
        "psnr_ratio": ("ratio_raw", "psnr", "compression ratio vs raw 24-bit RGB", "PSNR (dB, RGB)", True),
        "msssim_bpp": ("bpp", "ms_ssim", "bits per pixel", "MS-SSIM", False),
    }
    paths = []
    for key, (xk, yk, xlabel, ylabel, logx) in axes_of.items():
        fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
        for curve in results["rd"].values():
            pts = [p for p in curve["points"] if _finite(p[xk]) and _finite(p[yk])]
            pts.sort(key=lambda p: p[xk])
            style = "-o" if curve["codec"] == "aezip" else "--."
            ax.plot([p[xk] for p in pts], [p[yk] for p in pts], style, label=curve["label"])
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{ylabel} vs {xlabel} ({results['settings']['n_images']} images)")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / PLOTS[key]
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def write_all(results: dict, out: Path) -> list[Path]:
    """JSON, Markdown and plots into ``out`` (created if needed)."""
    out.mkdir(parents=True, exist_ok=True)
    return [write_json(results, out), write_markdown(results, out), *write_plots(results, out)]
