"""Peak memory of ``aezip pack`` or ``aezip unpack`` of one large image, in this process (Linux).

Run by ``tests/test_memory.py`` in a fresh process::

    python -m tests.memory_probe image|pack|unpack FOLDER

``image`` writes ``FOLDER/in/big.jpg`` (:data:`SIDE`, 64 MP, synthetic), ``pack`` packs it
into ``FOLDER/big.aez`` and ``unpack`` restores that into ``FOLDER/out``. Both go through the command line
(default quality, entropy and ``--jobs``). Prints one JSON line: ``baseline`` (resident bytes once
Python, torch and the model are loaded and have coded a small image), ``peak`` (``VmHWM``, the
high-water mark of the whole process) and ``seconds``.

To fit in a test's time, the transforms run for real on *one* tile of the image, in the middle
(where the halo is on every side), and are replaced by cheap stand-ins of the same shapes on the
others. Tiles run one after another and each frees its activations, so the peak is the one of a
full run: every array the size of the image is made as usual (the pixels, the latents, every
entropy coder's work, the decoded pixels, the output file) while one real tile pass runs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

SIDE = (9236, 6928)  # (width, height): 64.0 MP (the most aezip codes), 578 × 433 latents, 165 tiles
_calls = {"analyze": 0, "synthesize": 0}
_real_call = {"analyze": -1, "synthesize": -1}  # which call runs the real transform (set once warm)


def _resident() -> int:
    """Bytes resident now (``VmRSS``)."""
    return _status("VmRSS")


def _status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _patch() -> None:
    """Replace the transforms by stand-ins, except on the call chosen in ``_real_call``."""
    from aezip.model.cpu_synthesis import CpuSynthesis
    from aezip.model.inference import InferenceModel

    real_analyze, real_synthesize = InferenceModel.analyze, CpuSynthesis.__call__

    def analyze(self: InferenceModel, x: torch.Tensor, quality: int) -> torch.Tensor:
        _calls["analyze"] += 1
        if _calls["analyze"] - 1 == _real_call["analyze"] or _real_call["analyze"] < 0:
            return real_analyze(self, x, quality)
        # Like real latents: a few busy channels of small integers, the rest zero (so the streams,
        # hence the entropy coders' outputs, have realistic sizes).
        cells = F.avg_pool2d(x, 16).sub_(0.5).mul_(16)
        return F.pad(cells, (0, 0, 0, 0, 0, self.config.bottleneck - cells.shape[1]))

    def synthesize(self: CpuSynthesis, latents: np.ndarray, quality: int) -> np.ndarray:
        _calls["synthesize"] += 1
        if _calls["synthesize"] - 1 == _real_call["synthesize"] or _real_call["synthesize"] < 0:
            return real_synthesize(self, latents, quality)
        cells = latents[:3].transpose(1, 2, 0).astype(np.float32) / 8 + 0.5
        return cells.repeat(16, axis=0).repeat(16, axis=1)

    InferenceModel.analyze = analyze  # type: ignore[method-assign]
    CpuSynthesis.__call__ = synthesize  # type: ignore[method-assign]


def _warm_up() -> None:
    """Load torch, the model and the context tables, and code a small image with the real transforms."""
    from aezip.codec.codec import Codec

    small = np.full((96, 128, 3), 128, dtype=np.uint8)
    small[::7] = 40
    codec = Codec(device="cpu")
    codec.decode(codec.encode(small))


def write_image(path: Path) -> None:
    """A synthetic :data:`SIDE` JPEG with some texture (written a band of rows at a time)."""
    w, h = SIDE
    pixels = np.empty((h, w, 3), dtype=np.uint8)
    columns = np.arange(w)[None, :]
    for top in range(0, h, 512):
        rows = np.arange(top, min(top + 512, h))[:, None]
        pixels[top : top + 512, :, 0] = 128 + 60 * np.sin(columns * 0.01) * np.cos(rows * 0.02)
        pixels[top : top + 512, :, 1] = 128 + 50 * np.cos(rows * 0.013 + columns * 0.007)
        pixels[top : top + 512, :, 2] = (rows + columns // 64) % 256
    Image.fromarray(pixels).save(path, quality=90)


def middle_tile() -> int:
    """Index, in coding order, of a tile in the middle of the image (halo on every side)."""
    from aezip.codec.codec import tiles

    lh, lw = -(-SIDE[1] // 16), -(-SIDE[0] // 16)
    parts = tiles(lh, lw)
    inside = [i for i, (t, b, left, r) in enumerate(parts) if t > 0 and left > 0 and b < lh and r < lw]
    return inside[len(inside) // 2]


def main() -> None:
    step, folder = sys.argv[1], Path(sys.argv[2])
    if step == "image":
        (folder / "in").mkdir(exist_ok=True)
        write_image(folder / "in" / "big.jpg")
        return
    from aezip.cli.app import main as cli

    _patch()
    _warm_up()
    if step == "pack":
        args = ["pack", str(folder / "in"), str(folder / "big.aez"), "--force"]
    else:
        args = ["unpack", str(folder / "big.aez"), str(folder / "out"), "--force"]
    middle = middle_tile()
    _real_call["analyze"] = _real_call["synthesize"] = middle
    _calls["analyze"] = _calls["synthesize"] = 0
    baseline = _resident()
    start = time.perf_counter()
    cli(args, standalone_mode=False)
    result = {
        "baseline": baseline,
        "peak": _status("VmHWM"),
        "seconds": time.perf_counter() - start,
        "real_tile": _calls["analyze" if step == "pack" else "synthesize"] > middle,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
