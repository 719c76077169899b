"""Throughput of aezip.loader.ArchiveLoader over sharded archives, against ImageArchiveDataset + DataLoader.

Usage::

    python benchmarks/loader_throughput.py IMAGE_DIR [--shards 3] [--workers 2] [--batch 4] [--limit N]

Packs the images of IMAGE_DIR (first ``--limit``) into ``--shards`` archives at quality 6, then
times images per second for one epoch after a warm-up epoch (worker start and model load not
timed), all with the same random 256 px crop and batch size:

* ``DataLoader(ImageArchiveDataset, shuffle=True)`` over one archive of all images (the baseline);
* ``ArchiveLoader`` decoding in the workers (``decode_device=None``);
* ``ArchiveLoader`` with ``decode_device="cpu"``: workers only entropy-decode, the main process
  synthesises (the GPU path's code, on the CPU; on a GPU use ``--device cuda``).

Also times the sampler itself (``epoch_order`` for 1 M and 10 M items) and a mid-epoch resume
(``load_state_dict`` to the first batch). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from aezip.archive.pack import pack
from aezip.codec.codec import Codec
from aezip.codec.imagefile import is_image_name
from aezip.loader.archive_loader import ArchiveLoader
from aezip.loader.dataset import ImageArchiveDataset
from aezip.loader.sampling import epoch_order


class Crop:
    """Random ``size`` crop of a (C, H, W) tensor (picklable, works on any device)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        top = int(torch.randint(max(h - self.size, 0) + 1, ()))
        left = int(torch.randint(max(w - self.size, 0) + 1, ()))
        return image[..., top : top + self.size, left : left + self.size]


def timed_epoch(batches: object) -> tuple[int, float]:
    """Images and seconds of one pass over an iterable of image batches."""
    start = time.perf_counter()
    n = sum(int(b.shape[0]) for b in batches)  # type: ignore[attr-defined]
    return n, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("images", type=Path)
    p.add_argument("--shards", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--limit", type=int)
    p.add_argument("--device", default="cpu", help="decode_device of the third row")
    args = p.parse_args()
    files = sorted(f for f in args.images.iterdir() if is_image_name(f.name))[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        codec = Codec(quality=6, device="cpu")
        shard_paths = []
        for k in range(args.shards):
            src = root / f"src{k}"
            src.mkdir()
            for f in files[k :: args.shards]:
                shutil.copy(f, src / f.name)
            shard_paths.append(root / f"shard{k}.aez")
        whole = root / "whole"
        whole.mkdir()
        for f in files:
            shutil.copy(f, whole / f.name)
        start = time.perf_counter()
        for k, path in enumerate(shard_paths):
            pack(root / f"src{k}", path, codec)
        pack(whole, root / "whole.aez", codec)
        print(f"packed {len(files)} images twice in {time.perf_counter() - start:.1f} s", flush=True)
        crop = Crop(256)
        common = {"batch_size": args.batch, "num_workers": args.workers}
        baseline = DataLoader(
            ImageArchiveDataset(root / "whole.aez", transform=crop, mode="RGB", device="cpu"),
            shuffle=True,
            persistent_workers=args.workers > 0,
            **common,
        )
        rows = [
            ("DataLoader(ImageArchiveDataset), 1 archive", baseline),
            ("ArchiveLoader, decode in workers", ArchiveLoader(shard_paths, transform=crop, mode="RGB", **common)),
            (
                f"ArchiveLoader, decode_device={args.device!r}",
                ArchiveLoader(shard_paths, transform=crop, mode="RGB", decode_device=args.device, **common),
            ),
        ]
        print(f"\n{len(files)} images from {args.images}, {args.shards} shards, batch {args.batch}, ")
        print(f"{args.workers} workers, torch threads {torch.get_num_threads()}, {platform.processor() or 'cpu'}\n")
        print("| loader | images/s | epoch s |\n|---|---:|---:|")
        for label, loader in rows:
            timed_epoch(loader)  # warm-up: workers, models
            n, seconds = timed_epoch(loader)
            print(f"| {label} | {n / seconds:.2f} | {seconds:.1f} |", flush=True)
        loader = rows[1][1]
        assert isinstance(loader, ArchiveLoader)
        state = {**loader.state_dict(), "position": len(files) // 2, "samples_seen": 0}
        start = time.perf_counter()
        loader.load_state_dict(state)
        next(iter(loader))
        print(f"\nmid-epoch resume (load_state_dict to first batch): {time.perf_counter() - start:.2f} s")
    for n in (1_000_000, 10_000_000):
        start = time.perf_counter()
        epoch_order([n // 100] * 100, seed=0, epoch=0)
        print(f"epoch_order over {n:,} items in 100 shards: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
