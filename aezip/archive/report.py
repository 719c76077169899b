"""Reconstruction report of an archive: PSNR and bpp distribution and the worst-reconstructed images.

Reads only what packing measured and recorded per image (``pack --measure``, ``--min-psnr`` or
``--max-bpp``): the originals are gone after packing, so nothing is re-decoded. Images the model
reconstructs worst are unlike what it was trained on (noise, screenshots, synthetic or corrupt
images): the list is an outlier detector for a dataset.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

from aezip.archive.reader import Archive
from aezip.codec.quality import ImageStats
from aezip.errors import AezipError


def collect(archive: Archive) -> tuple[list[tuple[str, ImageStats]], int]:
    """(name, stats) of every coded image with recorded stats, and the number of coded images without."""
    measured, missing = [], 0
    for name in archive.names:
        if not archive.is_image(name):
            continue
        stats = archive.stats(name)
        if stats is None:
            missing += 1
        else:
            measured.append((name, stats))
    return measured, missing


def _spread(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {
        "min": ordered[0],
        "p10": at(0.1),
        "median": statistics.median(ordered),
        "mean": statistics.fmean(ordered),
        "p90": at(0.9),
        "max": ordered[-1],
    }


def summarize(archive: Archive, worst: int = 10) -> dict:
    """The report as a JSON-ready dict; AezipError when no image has recorded stats."""
    measured, missing = collect(archive)
    if not measured:
        raise AezipError(
            f"{archive.path}: no coded image has recorded quality stats (pack with --measure or --min-psnr)"
        )
    ranked = sorted(measured, key=lambda item: (item[1].psnr, item[0]))
    return {
        "archive": str(archive.path),
        "images": len(measured),
        "unmeasured": missing,
        "psnr": {k: round(v, 3) for k, v in _spread([s.psnr for _, s in measured]).items()},
        "bpp": {k: round(v, 4) for k, v in _spread([s.bpp for _, s in measured]).items()},
        "qualities": {str(q): n for q, n in sorted(Counter(s.quality for _, s in measured).items())},
        "below_floor": [name for name, s in measured if s.below_floor],
        "worst": [
            {"name": name, "psnr": round(s.psnr, 3), "bpp": round(s.bpp, 4), "quality": s.quality}
            for name, s in ranked[:worst]
        ],
    }


def to_text(report: dict) -> str:
    """Human-readable form of :func:`summarize`."""
    lines = [f"{report['archive']}: {report['images']} coded images with stats"]
    if report["unmeasured"]:
        lines[0] += f" ({report['unmeasured']} without)"
    for key, unit in (("psnr", "dB"), ("bpp", "bpp")):
        s = report[key]
        lines.append(
            f"{key + ':':6} min {s['min']:.2f}  p10 {s['p10']:.2f}  median {s['median']:.2f}  "
            f"mean {s['mean']:.2f}  p90 {s['p90']:.2f}  max {s['max']:.2f} {unit}"
        )
    lines.append("quality: " + ", ".join(f"q{q} ×{n}" for q, n in report["qualities"].items()))
    if report["below_floor"]:
        lines.append(f"below the floor: {len(report['below_floor'])}")
    lines.append(f"worst reconstructed (lowest PSNR first, {len(report['worst'])}):")
    lines += [f"  {w['psnr']:6.2f} dB  {w['bpp']:6.3f} bpp  q{w['quality']}  {w['name']}" for w in report["worst"]]
    return "\n".join(lines)


def plot(archive: Archive, path: Path) -> None:
    """Histograms of PSNR and bpp as a PNG (needs matplotlib: ``pip install aezip[bench]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise AezipError("--plot needs matplotlib (pip install 'aezip[bench]')") from None
    measured, _ = collect(archive)
    if not measured:
        raise AezipError(f"{archive.path}: no coded image has recorded quality stats")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].hist([s.psnr for _, s in measured], bins=30, color="#3b6ea8")
    axes[0].set_xlabel("PSNR (dB)")
    axes[1].hist([s.bpp for _, s in measured], bins=30, color="#a85b3b")
    axes[1].set_xlabel("bits per pixel")
    for ax in axes:
        ax.set_ylabel("images")
    fig.suptitle(Path(archive.path).name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
