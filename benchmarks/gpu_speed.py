"""The GPU path end to end: archive bytes → pixel tensors, and images → archive bytes, in MP/s.

Usage: ``python -m benchmarks.gpu_speed IMAGE_DIR --model MODEL --out speed.json [--device cuda]``

Every image is cut to the same 768×512 landscape frame (portraits are transposed first, smaller
images skipped), so batches of 1, 16 and 64 are true batched passes; a batch larger than the set
repeats images. Measured, for fp32 and bf16 transforms:

* ``decode``: streams → uint8 RGB tensors on the device (:meth:`aezip.Codec.decode_tensors`),
  entropy decoding on the CPU included;
* ``synthesis``: the same from already entropy-decoded latents (the GPU part alone);
* ``encode``: uint8 images → streams (:meth:`aezip.Codec.encode_many`), ANS entropy coding included;
* ``entropy_decode``: ANS decoding alone, per image on one CPU thread;
* ``dataset``: :class:`aezip.ImageArchiveDataset` on the device through a ``DataLoader`` (batch 16,
  no workers), images per second into float tensors;
* ``entropy_decode_parallel``: ANS decoding of the same streams spread over ``--workers`` threads;
* ``loader``: the training data path, archive → pixel tensors on the device, through
  :class:`aezip.loader.archive_loader.ArchiveLoader` with ``decode_device`` (entropy decoding in ``--workers``
  worker processes, batched synthesis in the main process), fp32 and bf16, for archives of the
  768×512 frames and of 256² crops cut from them; ``pack_s`` is the time to pack each archive
  (images → archive, transforms on the device).

Each figure is the best of a few timed repeats within a small time budget, after one warm-up;
on CUDA every timing ends with a synchronisation. Nothing is hard-coded: a CPU run (``--device
cpu``, as the test of the GPU script does) produces the same JSON with CPU figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from aezip.codec.codec import Codec
from aezip.train.data import list_images, load_rgb

FRAME = (512, 768)
BATCHES = (1, 16, 64)


def frames(folder: Path, limit: int | None = None) -> list[np.ndarray]:
    """Images of ``folder`` as landscape 512×768 centre crops (portraits transposed first)."""
    out = []
    for path in list_images(folder)[:limit]:
        rgb = load_rgb(path)
        if rgb.shape[0] > rgb.shape[1]:
            rgb = rgb.transpose(1, 0, 2)
        h, w = rgb.shape[:2]
        if h < FRAME[0] or w < FRAME[1]:
            continue
        top, left = (h - FRAME[0]) // 2, (w - FRAME[1]) // 2
        out.append(np.ascontiguousarray(rgb[top : top + FRAME[0], left : left + FRAME[1]]))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(fn: Callable[[], object], device: torch.device, budget_s: float, max_repeats: int = 5) -> float:
    """Best wall time of ``fn`` over up to ``max_repeats`` runs (after one warm-up) within ``budget_s``."""
    fn()
    _sync(device)
    best = float("inf")
    deadline = time.perf_counter() + budget_s
    for _ in range(max_repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
        if time.perf_counter() > deadline:
            break
    return best


def _batch(items: list, size: int) -> list:
    return [items[i % len(items)] for i in range(size)]


def measure_batch(
    codec: Codec,
    streams: list[bytes],
    parsed: list[tuple],
    images: list[np.ndarray],
    device: torch.device,
    budget_s: float,
) -> dict[str, float]:
    """Seconds to decode, synthesise and encode one batch (each pass holds the whole batch)."""
    pixels = len(images) * images[0].shape[0] * images[0].shape[1]

    def synthesis() -> None:
        for _chunk, out in codec._synthesize(parsed, max_batch_pixels=pixels):
            out.sum()

    return {
        "decode": best_time(lambda: codec.decode_tensors(streams, max_batch_pixels=pixels), device, budget_s),
        "synthesis": best_time(synthesis, device, budget_s),
        "encode": best_time(lambda: codec.encode_many(images, max_batch_pixels=pixels), device, budget_s),
    }


def run(
    folder: Path,
    model: Path | None,
    device: str,
    quality: int,
    batches: tuple[int, ...],
    budget_s: float,
    limit: int | None,
    workers: int = 0,
    loader_frames: int = 128,
) -> dict:
    """All measurements as one JSON-ready dict."""
    images = frames(folder, limit)
    if not images:
        raise SystemExit(f"no image of at least {FRAME[1]}x{FRAME[0]} in {folder}")
    dev = torch.device(device)
    mp_each = FRAME[0] * FRAME[1] / 1e6
    result: dict = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({platform.machine()})",
        "torch": torch.__version__,
        "quality": quality,
        "frame": f"{FRAME[1]}x{FRAME[0]}",
        "images": len(images),
        "rows": [],
    }
    reference = Codec(quality=quality, device=device, model=model, entropy="ans")
    streams = reference.encode_many(images)
    result["bpp"] = float(np.mean([8 * len(s) / (FRAME[0] * FRAME[1]) for s in streams]))
    parsed = [reference._parse(s) for s in streams]
    start = time.perf_counter()
    for stream in streams:
        reference._parse(stream)
    result["entropy_decode_mp_s"] = len(streams) * mp_each / (time.perf_counter() - start)
    for precision in ("fp32", "bf16"):
        codec = Codec(quality=quality, device=device, model=model, entropy="ans", precision=precision)
        for b in batches:
            rows = measure_batch(codec, _batch(streams, b), _batch(parsed, b), _batch(images, b), dev, budget_s)
            for stage, seconds in rows.items():
                mp_s = b * mp_each / seconds
                result["rows"].append(
                    {"stage": stage, "precision": precision, "batch": b, "seconds": seconds, "mp_s": mp_s}
                )
            print(json.dumps(result["rows"][-3:]), flush=True)
    result["dataset"] = dataset_speed(images, model, device, quality, budget_s)
    result["entropy_decode_parallel"] = parallel_entropy_decode(reference, streams, workers, mp_each)
    result["loader"] = loader_speeds(images, model, device, quality, budget_s, workers, loader_frames)
    return result


def parallel_entropy_decode(codec: Codec, streams: list[bytes], workers: int, mp_each: float) -> dict:
    """MP/s of entropy decoding alone with ``workers`` threads (constriction releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    work = _batch(streams, max(len(streams), 4 * max(workers, 1)))
    with ThreadPoolExecutor(max(workers, 1)) as pool:
        list(pool.map(codec._parse, work[:workers]))
        start = time.perf_counter()
        list(pool.map(codec._parse, work))
        seconds = time.perf_counter() - start
    return {"threads": max(workers, 1), "streams": len(work), "mp_s": len(work) * mp_each / seconds}


def crops_of(images: list[np.ndarray], side: int = 256) -> list[np.ndarray]:
    """Every whole ``side``² tile of each frame (6 per 768×512 frame)."""
    return [
        np.ascontiguousarray(rgb[top : top + side, left : left + side])
        for rgb in images
        for top in range(0, rgb.shape[0] - side + 1, side)
        for left in range(0, rgb.shape[1] - side + 1, side)
    ]


def loader_speeds(
    images: list[np.ndarray],
    model: Path | None,
    device: str,
    quality: int,
    budget_s: float,
    workers: int,
    frames_count: int = 128,
) -> list[dict]:
    """Images/s and MP/s of :class:`aezip.loader.archive_loader.ArchiveLoader` on ``device``, per archive and precision.

    The archives hold ``frames_count`` frames and eight times as many 256² crops.
    """
    from PIL import Image

    from aezip.archive.pack import pack
    from aezip.loader.archive_loader import ArchiveLoader

    rows = []
    sets = {"frames": _batch(images, frames_count), "crops256": _batch(crops_of(images), 8 * frames_count)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, arrays in sets.items():
            src = Path(tmp) / name
            src.mkdir()
            for i, rgb in enumerate(arrays):
                Image.fromarray(rgb).save(src / f"{i:04d}.png", compress_level=1)
            archive = Path(tmp) / f"{name}.aez"
            start = time.perf_counter()
            pack(src, archive, Codec(quality=quality, device=device, model=model))
            pack_s = time.perf_counter() - start
            mp = len(arrays) * arrays[0].shape[0] * arrays[0].shape[1] / 1e6
            for precision in ("fp32", "bf16"):
                loader = ArchiveLoader(
                    archive,
                    batch_size=64,
                    shuffle=False,
                    decode_device=device,
                    precision=precision,
                    models=[model] if model else None,
                    num_workers=workers,
                    persistent_workers=workers > 0,
                )

                def epoch(loader: ArchiveLoader = loader) -> None:
                    for batch in loader:
                        batch.sum()

                seconds = best_time(epoch, torch.device(device), budget_s, max_repeats=3)
                rows.append(
                    {
                        "archive": name,
                        "images": len(arrays),
                        "precision": precision,
                        "workers": workers,
                        "pack_s": pack_s,
                        "seconds": seconds,
                        "images_s": len(arrays) / seconds,
                        "mp_s": mp / seconds,
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return rows


def dataset_speed(images: list[np.ndarray], model: Path | None, device: str, quality: int, budget_s: float) -> dict:
    """Images per second from :class:`aezip.ImageArchiveDataset` decoding on ``device``."""
    from PIL import Image
    from torch.utils.data import DataLoader

    from aezip.archive.pack import pack
    from aezip.loader.dataset import ImageArchiveDataset

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for i, rgb in enumerate(_batch(images, 64)):
            Image.fromarray(rgb).save(src / f"{i:03d}.png", compress_level=1)
        archive = Path(tmp) / "set.aez"
        pack(src, archive, Codec(quality=quality, device=device, model=model))
        data = ImageArchiveDataset(archive, device=device, models=[model] if model else None)
        loader = DataLoader(data, batch_size=16, num_workers=0)
        count = len(data)

        def epoch() -> None:
            for batch in loader:
                batch.sum()

        seconds = best_time(epoch, torch.device(device), budget_s, max_repeats=3)
    return {"images": count, "batch": 16, "workers": 0, "seconds": seconds, "images_s": count / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", type=Path)
    parser.add_argument("--model", type=Path, help="model file (default: the shipped model)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quality", type=int, default=6)
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timed repeats per figure")
    parser.add_argument("--limit", type=int, help="use only the first N images")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(16, os.cpu_count() or 1),
        help="entropy-decoding workers (default: cores, ≤ 16)",
    )
    parser.add_argument("--loader-frames", type=int, default=128, help="frames in the loader's archive (crops: 8x)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    batches = tuple(int(b) for b in args.batches.split(","))
    result = run(
        args.images,
        args.model,
        args.device,
        args.quality,
        batches,
        args.budget,
        args.limit,
        args.workers,
        args.loader_frames,
    )
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
