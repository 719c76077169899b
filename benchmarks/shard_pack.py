"""Throughput of ``aezip pack --shard-images`` for several ``--jobs``: python -m benchmarks.shard_pack.

Generates ``--images`` synthetic photos (``--size`` px, PNG) in a temporary folder, packs them into a
sharded dataset once per job count through the CLI (``--device cpu``), checks the shards are byte
identical across job counts and prints one JSON line per run (files/s, input MB/s). Wall times include
the CLI's start (imports, model load).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.conftest import photo_like  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    parser.add_argument("--shard-images", type=int, default=30)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        for i in range(args.images):
            path = src / f"c{i % 8}" / f"{i:06d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(photo_like(*args.size, seed=i)).save(path)
        shards: dict[int, dict[str, bytes]] = {}
        for run, jobs in enumerate(args.jobs):
            dst = Path(tmp) / f"out-{run}"  # a fresh folder per run: a second run into one folder would resume
            cmd = ["aezip", "pack", str(src), str(dst), "--device", "cpu", "--json"]
            cmd += ["--shard-images", str(args.shard_images), "--jobs", str(jobs)]
            start = time.perf_counter()
            out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            wall = time.perf_counter() - start
            shards[jobs] = {p.name: p.read_bytes() for p in sorted(dst.iterdir())}
            row = {
                "jobs": jobs,
                "images": out["images"],
                "shards": out["shards"],
                "wall_s": round(wall, 2),
                "files_per_s": round(out["files"] / wall, 1),
                "input_MB_per_s": round(out["bytes_in"] / wall / 1e6, 2),
                "identical_to_first": shards[jobs] == shards[args.jobs[0]],
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
