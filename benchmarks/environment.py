"""What the numbers were measured on: machine, library versions, model identity, date, git state.

Results are only comparable between runs with the same model sha256 and similar machines;
this module records enough to tell.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _command_output(cmd: list[str]) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=ROOT)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else None


def _dotted(text: str | None) -> str | None:
    """The first x.y.z version number in ``text``."""
    found = re.search(r"\d+\.\d+\.\d+", text or "")
    return found.group(0) if found else text


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """CPU, core counts, torch threads and GPUs."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1)})
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpus": gpus,
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def versions() -> dict:
    """Versions of aezip and of every library whose code is measured."""
    import zstandard
    from PIL import features

    import aezip

    avif_codecs = None
    if features.check("avif"):
        from PIL import AvifImagePlugin

        avif_codecs = AvifImagePlugin._avif.codec_versions()
    return {
        "aezip": aezip.__version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "numpy": _version("numpy"),
        "pillow": _version("pillow"),
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "libwebp": features.version("webp"),
        "libavif": features.version("avif"),
        "libavif_codecs": avif_codecs,
        "pillow_jxl_plugin": _version("pillow-jxl-plugin"),
        "libjxl": "bundled in pillow-jxl-plugin (version not exposed)",
        "zstandard": zstandard.__version__,
        "libzstd": ".".join(map(str, zstandard.ZSTD_VERSION)),
        "zstd_cli": _dotted(_command_output(["zstd", "--version"])),
        "tar": _command_output(["tar", "--version"]),
        "constriction": _version("constriction"),
        "pytorch_msssim": _version("pytorch-msssim"),
        "bjontegaard": _version("bjontegaard"),
        "matplotlib": _version("matplotlib"),
    }


def model() -> dict:
    """The default model's file, sha256 and the training facts from its card."""
    from aezip.model.registry import default_model_path
    from aezip.model.weights import load_model

    path = default_model_path()
    loaded = load_model(path)
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    mtime = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    return {
        "path": str(path),
        "sha256": loaded.sha256,
        "model_id": loaded.model_id.hex(),
        "file_bytes": path.stat().st_size,
        "file_mtime_utc": mtime.isoformat(timespec="seconds"),
        "exported": card.get("exported"),
        "steps": card.get("cumulative_steps", card.get("steps")),
        "train_seconds": card.get("cumulative_seconds", card.get("seconds")),
        "config": json.loads(loaded.config.to_json()),
    }


def git_state() -> dict:
    """Commit of the checkout and whether tracked files differ from it."""
    commit = _command_output(["git", "rev-parse", "HEAD"])
    dirty = _command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    return {"commit": commit, "dirty": bool(dirty)}


def describe() -> dict:
    """Everything above, plus the run's date."""
    return {
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "model": model(),
        "git": git_state(),
    }
