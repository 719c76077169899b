"""The benchmark run: arguments, then RD sweeps, BD-rates, speed, whole-folder figures, report.

``python benchmarks/run.py IMAGE_DIR --out DIR`` calls :func:`main`; see benchmarks/README.md.
torch and aezip load inside :func:`main`, so ``--help`` and bad arguments answer at once.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import baselines
from benchmarks.metrics import BD_METHOD

if TYPE_CHECKING:
    from benchmarks.images import BenchImage

QUICK_QUALITIES = [1, 4, 8]
QUICK_SPEED_IMAGES = 2
AEZIP_RATE = (
    "size of a one-image .aez archive per image, written by aezip.archive.pack.pack (container header, index entry"
    " with member name and metadata, and footer included); stream_bytes/container_bytes split it"
)


def parse_qualities(text: str) -> list[int]:
    """``"1-8"``, ``"1,4,8"`` or ``"2-4,8"`` → sorted distinct qualities."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad quality range {part!r}") from None
        if not 1 <= a <= b:
            raise argparse.ArgumentTypeError(f"bad quality range {part!r}")
        out.update(range(a, b + 1))
    if not out:
        raise argparse.ArgumentTypeError("no qualities given")
    return sorted(out)


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Rate–distortion and speed of aezip against JPEG, WebP, AVIF and JPEG XL.",
    )
    p.add_argument("image_dir", type=Path, help="folder of images (searched recursively, like aezip pack)")
    p.add_argument("--out", type=Path, required=True, help="output folder for results.json, results.md, *.png")
    p.add_argument("--qualities", type=parse_qualities, help="aezip qualities, e.g. 1-8 or 1,4,8 (default 1-8)")
    p.add_argument(
        "--entropies", type=_names, help="aezip entropy coders to sweep (default: every choice aezip offers)"
    )
    p.add_argument(
        "--baselines",
        type=_names,
        default=[b.key for b in baselines.BASELINES],
        help="baseline codecs (jpeg,webp,avif,jxl); jpeg is the BD-rate anchor",
    )
    p.add_argument("--quick", action="store_true", help="3 qualities per codec and 2 speed images: a smoke run")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="aezip device for the RD sweep")
    p.add_argument("--threads", type=int, help="torch threads, and AVIF/JPEG XL threads (default: torch's default)")
    p.add_argument("--limit", type=int, help="use only the first N images (whole-folder step uses a copy of them)")
    p.add_argument("--speed-images", type=int, help="images for the speed step (default all; 2 with --quick)")
    p.add_argument("--speed-quality", type=int, default=6, help="aezip quality for the speed step (default 6)")
    p.add_argument("--entropy", help="aezip entropy coder for the speed and whole-folder steps (default: aezip's)")
    p.add_argument("--speed-repeats", type=int, default=1, help="passes over the speed images (default 1)")
    p.add_argument("--pack-quality", type=int, default=6, help="aezip quality for the whole-folder step (default 6)")
    p.add_argument("--no-speed", action="store_true", help="skip the speed step")
    p.add_argument("--no-dataset", action="store_true", help="skip the whole-folder pack/unpack step")
    return p


def _dataset_folder(args: argparse.Namespace, images: list[BenchImage], work: Path) -> Path:
    """The folder itself, or with --limit a copy holding only the selected images."""
    if not args.limit:
        return args.image_dir
    folder = work / "subset" / args.image_dir.resolve().name
    for img in images:
        target = folder / img.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(img.path, target)
    return folder


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its report; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.image_dir.is_dir():
        parser.error(f"not a folder: {args.image_dir}")
    import torch

    from aezip.codec import codec as aezip_codec
    from benchmarks import dataset, environment, rd, report, speed
    from benchmarks.images import load_images

    choices = list(getattr(aezip_codec, "ENTROPY_CHOICES", ("ans", "zstd")))
    entropies = args.entropies or choices
    entropy = args.entropy or aezip_codec.DEFAULT_ENTROPY
    unknown = (set(args.baselines) - {b.key for b in baselines.BASELINES}) | (set(entropies + [entropy]) - set(choices))
    if unknown:
        parser.error(f"unknown codec names: {', '.join(sorted(unknown))}")

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    baselines.set_decode_threads(threads)
    qualities = args.qualities or (QUICK_QUALITIES if args.quick else list(range(1, 9)))
    chosen, skipped = baselines.selected(args.baselines)

    start = time.perf_counter()
    env = environment.describe()
    with tempfile.TemporaryDirectory(prefix="aezip-bench-") as tmp:
        work = Path(tmp)
        images = load_images(args.image_dir, work, args.limit)
        curves = rd.aezip_curves(images, qualities, entropies, args.device, work)
        curves.update(rd.baseline_curves(images, chosen, args.quick, threads))
        speed_result = None
        if not args.no_speed:
            n = args.speed_images or (QUICK_SPEED_IMAGES if args.quick else len(images))
            cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
            devices = ["cpu", "cuda"] if cuda else ["cpu"]
            speed_result = speed.run_speed(
                images[:n], chosen, args.speed_quality, entropy, devices, threads, args.speed_repeats
            )
        dataset_result = None
        if not args.no_dataset:
            folder = _dataset_folder(args, images, work)
            dataset_result = dataset.run_dataset(folder, work, args.pack_quality, entropy, args.device, threads)
            dataset_result["folder"] = str(args.image_dir)
            dataset_result["only_images"] = len(images) if args.limit else None

    results = {
        "schema": "aezip-bench/1",
        "command": ["benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])],
        "settings": {
            "image_dir": str(args.image_dir),
            "n_images": len(images),
            "megapixels": sum(i.pixels for i in images) / 1e6,
            "quick": args.quick,
            "qualities": qualities,
            "entropies": entropies,
            "entropy_speed_and_folder": entropy,
            "device": args.device,
            "threads": threads,
            "aezip_rate": AEZIP_RATE,
            "psnr": "10·log10(255²/MSE) over all RGB values of an image, then averaged over images",
            "ms_ssim": "pytorch_msssim.ms_ssim, data_range 255, 5 scales, window 11 (smaller for sides < 161 px)",
            "bd_method": BD_METHOD,
            "bd_anchor": "jpeg",
            "skipped_codecs": skipped,
        },
        "environment": env,
        "images": [
            {
                "name": i.name,
                "width": i.width,
                "height": i.height,
                "file_bytes": i.file_bytes,
                "aezip_input": i.aezip_input,
            }
            for i in images
        ],
        "rd": curves,
        "bd_rate_vs_jpeg": rd.bd_rates(curves, "jpeg"),
        "speed": speed_result,
        "dataset": dataset_result,
        "elapsed_s": time.perf_counter() - start,
    }
    for path in report.write_all(results, args.out):
        print(path)
    return 0
