"""The GPU visit script end to end on the CPU with a budget of seconds.

On the day a GPU is lent, only the GPU itself is new: installation, training, export, the
files left behind and the speed measurement all ran here first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from aezip.model.registry import default_model
from aezip.model.weights import load_model
from tests.conftest import photo_like

ROOT = Path(__file__).resolve().parents[1]


def _dry_run(
    tmp_path: Path, channels: int, bottleneck: int, speed_seconds: int = 150, train_args: tuple[str, ...] = ()
) -> Path:
    """Run gpu_run.sh on the CPU for about a second of training; return its OUTDIR.

    The speed stage gets ``speed_seconds`` (the script bounds it, and keeps the model if it runs out).
    """
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "val").mkdir()
    for i in range(4):
        Image.fromarray(photo_like(64, 64, seed=i)).save(data / "train" / f"{i}.webp", lossless=True)
    Image.fromarray(photo_like(512, 768, seed=9)).save(data / "val" / "v.webp", lossless=True)
    env = {
        **os.environ,
        "AEZIP_GPU_DATA": str(data),
        "AEZIP_GPU_CHANNELS": str(channels),
        "AEZIP_GPU_BOTTLENECK": str(bottleneck),
        "AEZIP_GPU_SPEED_ARGS": "--device cpu --limit 1 --batches 1 --budget 0 --workers 0 --loader-frames 1",
        "AEZIP_GPU_SPEED_SECONDS": str(speed_seconds),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    out = tmp_path / "out"
    args = ["bash", str(ROOT / "scripts" / "gpu_run.sh"), str(out), "0.02", "--crop", "32", "--batch", "8"]
    args += ["--device", "cpu", "--val-limit", "1", *train_args]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    files = {p.name: p.stat().st_size for p in out.iterdir()}
    assert {"model.safetensors", "model.safetensors.json", "train.txt", "speed.txt"} <= set(files)
    assert len(files) <= 8
    assert max(files.values()) < 16 * 2**20
    return out


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_run_dry_run_on_cpu(tmp_path: Path) -> None:
    variants = ("--bench", "eager:8,compile:8", "--bench-seconds", "0.3", "--compile-backend", "aot_eager")
    out = _dry_run(tmp_path, channels=8, bottleneck=8, train_args=variants)
    assert (out / "gpu_speed.json").is_file()
    console = (out / "train.txt").read_text()
    assert "from scratch" in console
    assert "step variant eager:8" in console and "step variant compile:8" in console and "training with" in console
    card = json.loads((out / "model.safetensors.json").read_text())
    assert card["steps"] > 0 and card["architecture"]["channels"] == 8 and card["device"].startswith("cpu")
    assert card["sha256"] == load_model(out / "model.safetensors").sha256
    speed = json.loads((out / "gpu_speed.json").read_text())
    stages = {(r["stage"], r["precision"], r["batch"]) for r in speed["rows"]}
    assert stages == {(s, p, 1) for s in ("decode", "synthesis", "encode") for p in ("fp32", "bf16")}
    assert all(r["mp_s"] > 0 for r in speed["rows"]) and speed["dataset"]["images_s"] > 0
    assert speed["entropy_decode_parallel"]["mp_s"] > 0
    loader = {(r["archive"], r["precision"]) for r in speed["loader"] if r["images_s"] > 0}
    assert loader == {(a, p) for a in ("frames", "crops256") for p in ("fp32", "bf16")}


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_run_continues_the_shipped_default(tmp_path: Path) -> None:
    """With the default's architecture, the visit trains on from the catalog's default model.

    The full-size model's speed stage takes minutes on a CPU; the first test covers that stage.
    """
    path = default_model().path
    shipped = load_model(path)
    out = _dry_run(
        tmp_path, shipped.config.channels, shipped.config.bottleneck, speed_seconds=1, train_args=("--variant", "eager")
    )
    assert f"continuing the default model ({path})" in (out / "train.txt").read_text()
    card = json.loads((out / "model.safetensors.json").read_text())
    assert card["lambdas"] == list(shipped.config.lambdas)
    assert card["cumulative_steps"] == int(shipped.metadata["cumulative_steps"]) + card["steps"] and card["steps"] > 0


def test_gpu_run_needs_its_arguments() -> None:
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_run.sh")], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr
