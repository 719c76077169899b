"""Training-input throughput: ImageArchiveDataset over an ``.aez`` archive vs a folder of JPEGs.

Usage::

    python benchmarks/dataset_throughput.py IMAGE_DIR [--workers 2] [--quality 6] [--limit N]

Packs the images of IMAGE_DIR at ``--quality``, picks the JPEG quality whose mean PSNR (RGB, over
the same images) is closest to aezip's, writes those JPEGs (Pillow, default 4:2:0), then times
images per second through a DataLoader for both, with the same transform (random crop + flip of
the float tensor), batch size and workers. A warm-up epoch (worker start, model load) is not
timed. Rows with ``workers=0`` decode in the main process: there aezip decodes each batch in one
batched pass on CUDA when available (``device="auto"``); in workers it decodes on the CPU.
Prints a Markdown table with bytes on disk, bits per pixel, PSNR and throughput.
"""

from __future__ import annotations

import argparse
import io
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from aezip.archive.pack import pack
from aezip.codec.codec import Codec
from aezip.codec.imagefile import is_image_name
from aezip.codec.metrics import psnr
from aezip.loader.dataset import ImageArchiveDataset, to_tensor


class CropFlip:
    """The shared training transform: random crop (padded if smaller) and horizontal flip of a tensor."""

    def __init__(self, size: int) -> None:
        self.ops = transforms.Compose(
            [transforms.RandomCrop(size, pad_if_needed=True), transforms.RandomHorizontalFlip()]
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops(x)


class JpegFolder(Dataset):
    """The baseline: JPEG files read with Pillow, converted like the archive dataset, same transform."""

    def __init__(self, paths: list[Path], transform: CropFlip) -> None:
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as im:
            return self.transform(to_tensor(im.convert("RGB")))


def jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def jpeg_psnr(originals: list[np.ndarray], quality: int) -> float:
    """Mean PSNR of the images after a JPEG round trip at ``quality``."""
    scores = []
    for arr in originals:
        with Image.open(io.BytesIO(jpeg_bytes(Image.fromarray(arr), quality))) as im:
            scores.append(psnr(arr, np.asarray(im.convert("RGB"))))
    return float(np.mean(scores))


def matching_jpeg_quality(originals: list[np.ndarray], target: float) -> tuple[int, float]:
    """The JPEG quality (1..100) whose mean PSNR is closest to ``target``: coarse scan, then refine."""
    scores = {q: jpeg_psnr(originals, q) for q in range(5, 101, 5)}
    coarse = min(scores, key=lambda q: abs(scores[q] - target))
    for q in range(max(1, coarse - 4), min(100, coarse + 4) + 1):
        scores.setdefault(q, jpeg_psnr(originals, q))
    best = min(scores, key=lambda q: abs(scores[q] - target))
    return best, scores[best]


def throughput(dataset: Dataset, workers: int, batch_size: int, epochs: int) -> float:
    """Images per second over ``epochs`` timed epochs after one untimed warm-up epoch."""
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    for _ in loader:
        pass
    start = time.perf_counter()
    count = 0
    for _ in range(epochs):
        for batch in loader:
            count += batch.shape[0]
    return count / (time.perf_counter() - start)


def machine() -> str:
    """The card (or CPU) the numbers come from."""
    cpus = f"{torch.get_num_threads()} torch threads"
    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}; CPU: {platform.processor() or platform.machine()}, {cpus}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU only: {model}, {cpus}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image_dir", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quality", type=int, default=6)
    parser.add_argument("--limit", type=int, help="use only the first N images (sorted by name)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per row")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args()

    paths = sorted(p for p in args.image_dir.iterdir() if p.is_file() and is_image_name(p.name))[: args.limit]
    if not paths:
        raise SystemExit(f"no images in {args.image_dir}")
    originals = []
    for p in paths:
        with Image.open(p) as im:
            originals.append(np.asarray(im.convert("RGB")))
    pixels = sum(a.shape[0] * a.shape[1] for a in originals)
    transform = CropFlip(args.crop)

    with tempfile.TemporaryDirectory(prefix="aezip-bench-") as tmp:
        root = Path(tmp)
        (root / "src").mkdir()
        (root / "jpeg").mkdir()
        for p in paths:
            shutil.copy2(p, root / "src" / p.name)
        archive = root / "data.aez"
        t0 = time.perf_counter()
        pack(root / "src", archive, Codec(quality=args.quality, device=args.device))
        pack_s = time.perf_counter() - t0

        check = ImageArchiveDataset(archive, output="pil", mode="RGB", device=args.device)
        order = {p.name: i for i, p in enumerate(paths)}
        recon = check.get_batch(range(len(check)))
        aez_psnr = float(
            np.mean([psnr(originals[order[n]], np.asarray(im)) for n, im in zip(check.names, recon, strict=True)])
        )
        jq, jq_psnr = matching_jpeg_quality(originals, aez_psnr)
        jpeg_paths = []
        for p, arr in zip(paths, originals, strict=True):
            out = root / "jpeg" / (p.stem + ".jpg")
            out.write_bytes(jpeg_bytes(Image.fromarray(arr), jq))
            jpeg_paths.append(out)

        aez_size = archive.stat().st_size
        jpeg_size = sum(p.stat().st_size for p in jpeg_paths)
        orig_size = sum(p.stat().st_size for p in paths)
        aez_ds = ImageArchiveDataset(archive, transform=transform, mode="RGB", device=args.device)
        jpeg_ds = JpegFolder(jpeg_paths, transform)
        main_device = str(aez_ds.codec.device)

        rows = []
        for workers in sorted({args.workers, 0}, reverse=True):
            aez_where = "cpu (workers)" if workers > 0 and args.device == "auto" else main_device
            rows.append(
                (
                    f"aezip q{args.quality}",
                    workers,
                    aez_where,
                    aez_size,
                    aez_psnr,
                    throughput(aez_ds, workers, args.batch_size, args.epochs),
                )
            )
            rows.append(
                (
                    f"JPEG q{jq} (Pillow)",
                    workers,
                    "cpu",
                    jpeg_size,
                    jq_psnr,
                    throughput(jpeg_ds, workers, args.batch_size, args.epochs),
                )
            )

    print(
        f"{len(paths)} images from {args.image_dir} ({pixels / 1e6:.2f} Mpx, originals {orig_size:,} bytes); "
        f"{machine()}; pack took {pack_s:.1f} s"
    )
    print(
        f"batch {args.batch_size}, transform RandomCrop({args.crop}) + RandomHorizontalFlip, "
        f"{args.epochs} timed epochs after 1 warm-up"
    )
    if jq == 1 and jq_psnr > aez_psnr:
        print("note: JPEG q1 (its lowest) already has a higher PSNR than aezip here")
    print()
    print("| data | workers | decode on | bytes on disk | bpp | mean PSNR (dB) | images/s |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, workers, where, size, quality_db, rate in rows:
        print(f"| {name} | {workers} | {where} | {size:,} | {size * 8 / pixels:.3f} | {quality_db:.2f} | {rate:.2f} |")


if __name__ == "__main__":
    main()
