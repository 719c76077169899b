"""CPU speed and memory: today's code against a reference checkout, in the same run.

Usage::

    git worktree add /tmp/aezip-ref e9d10b3
    python -m benchmarks.cpu_speed ../shared/data/kodak --reference /tmp/aezip-ref [--rounds 2]
    python -m benchmarks.cpu_speed --memory 64   # peak RSS of pack and of unpack of a 64 MP image

End to end (process start included): ``aezip pack`` and ``aezip unpack`` of IMAGE_DIR with the
reference code (``PYTHONPATH=REF``, its default threads) and with this code (default ``--jobs``,
and ``--jobs 1``), alternating round by round so a load spike on a shared machine hits both.
Then ``ImageArchiveDataset`` with ``--workers`` DataLoader workers over the reference's archive,
both codes in turn (images/s, best epoch after a warm-up). In process, one thread, per image: the
analysis and synthesis in the training form (the old path), in the PyTorch inference form
(channels_last transposed convolutions, the GPU path) and with the NumPy decoder (what aezip runs
on a CPU), beside Pillow's JPEG, WebP, AVIF and JPEG XL decode of the same image. Speeds are reported as ratios to
the reference measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _run(cmd: list[str], pythonpath: str | None = None) -> float:
    """Wall seconds of a command (its output discarded); fails loudly if it fails.

    It runs in the filesystem root: ``python -m``/``-c`` put the working directory ahead of
    ``PYTHONPATH``, so from a checkout the "reference" would import that checkout's code.
    """
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def end_to_end(image_dir: Path, reference: Path, rounds: int, keep: Path | None = None) -> dict[str, dict[str, float]]:
    """Best wall time of pack and unpack per variant over ``rounds`` alternating rounds.

    ``keep``: where to copy the reference's archive (for :func:`dataset_epochs`)."""
    aezip = [sys.executable, "-m", "aezip"]
    image_dir, reference = image_dir.resolve(), reference.resolve()
    variants = {"reference": (str(reference), []), "new": (str(Path(__file__).resolve().parent.parent), [])}
    variants["new --jobs 1"] = (variants["new"][0], ["--jobs", "1"])
    best: dict[str, dict[str, float]] = {k: {"pack": float("inf"), "unpack": float("inf")} for k in variants}
    with tempfile.TemporaryDirectory(prefix="aezip-cpu-") as tmp:
        for _ in range(rounds):
            for name, (path, extra) in variants.items():
                archive, dest = Path(tmp) / "k.aez", Path(tmp) / "out"
                archive.unlink(missing_ok=True)
                shutil.rmtree(dest, ignore_errors=True)
                t = _run([*aezip, "pack", str(image_dir), str(archive), *extra], path)
                best[name]["pack"] = min(best[name]["pack"], t)
                t = _run([*aezip, "unpack", str(archive), str(dest), *extra], path)
                best[name]["unpack"] = min(best[name]["unpack"], t)
                if name == "reference" and keep is not None:
                    shutil.copyfile(archive, keep)
    return best


_EPOCHS = """
import sys, time
import torch
from torch.utils.data import DataLoader
from aezip.loader.dataset import ImageArchiveDataset
torch.manual_seed(0)
ds = ImageArchiveDataset(sys.argv[1], output="tensor", mode="RGB")
loader = DataLoader(ds, batch_size=1, num_workers=int(sys.argv[2]), persistent_workers=True,
                    collate_fn=lambda items: items)
times = []
for epoch in range(int(sys.argv[3]) + 1):  # epoch 0 warms up: worker start, model load
    start = time.perf_counter()
    count = sum(len(batch) for batch in loader)
    times.append(time.perf_counter() - start)
print(count, min(times[1:]))
"""


def dataset_epochs(archive: Path, reference: Path, workers: int, epochs: int) -> dict[str, float]:
    """Images/s of ``ImageArchiveDataset`` through a DataLoader with ``workers`` workers: best epoch
    after a warm-up one, for the reference code and this code, each in its own process, on the
    same archive (written by the reference, so both decode the same model's latents)."""
    rates = {}
    for name, path in (("reference", str(reference.resolve())), ("new", str(Path(__file__).resolve().parent.parent))):
        env = dict(os.environ, PYTHONPATH=path)
        out = subprocess.run(
            [sys.executable, "-c", _EPOCHS, str(archive.resolve()), str(workers), str(epochs)],
            check=True,
            cwd="/",  # see _run
            env=env,
            capture_output=True,
            text=True,
        ).stdout.split()
        rates[name] = int(out[0]) / float(out[1])
    return rates


def transforms(image_dir: Path, limit: int) -> list[tuple[str, float, float]]:
    """(variant, encode MP/s, decode MP/s) on one thread; JPEG/WebP rows are Pillow decode only."""
    import io

    import torch
    from PIL import Image

    from aezip.codec.codec import Codec
    from aezip.model.inference import InferenceModel
    from aezip.model.runtime import keep_freed_memory

    keep_freed_memory()  # as the command line does
    torch.set_num_threads(1)
    codec = Codec(device="cpu")
    net = codec.model.net.eval()
    forms = {
        "inference, transposed convolutions (channels_last; the GPU path)": InferenceModel(net),
        "inference, NumPy Winograd (what aezip runs on a CPU)": _NumpyDecoder(codec.model),
    }
    paths = sorted(image_dir.glob("*.png"))[:limit]
    rows: dict[str, list[float]] = {}
    pixels = 0
    with torch.inference_mode():
        for p in paths:
            rgb = np.asarray(Image.open(p).convert("RGB"))
            pixels += rgb.shape[0] * rgb.shape[1]
            x = torch.from_numpy(np.stack([rgb])).permute(0, 3, 1, 2).float().div_(255)
            y = torch.round(net.analyze(x, 5))
            if not rows:  # warm-up: build each form's lazily converted layers outside the timing
                for form in forms.values():
                    form.synthesize(y, 5)
            for name, form in {"training form (old path)": net, **forms}.items():
                rows.setdefault(name, [0.0, 0.0])
                rows[name][0] += _time(lambda f=form, x=x: f.analyze(x, 5))
                rows[name][1] += _time(lambda f=form, y=y: f.synthesize(y, 5))
            for fmt, opts in _baseline_formats():
                buf = io.BytesIO()
                Image.fromarray(rgb).save(buf, fmt, **opts)
                data = buf.getvalue()
                rows.setdefault(f"Pillow {fmt} (decode only)", [0.0, 0.0])
                rows[f"Pillow {fmt} (decode only)"][1] += _time(lambda d=data: np.asarray(Image.open(io.BytesIO(d))))
    mp = pixels / 1e6
    return [(k, mp / v[0] if v[0] else 0.0, mp / v[1]) for k, v in rows.items()]


def _baseline_formats() -> list[tuple[str, dict]]:
    """Pillow formats whose decode speed is reported beside aezip's: JPEG, WebP, and AVIF / JPEG XL
    where this Pillow can write them (AVIF is built into Pillow >= 11; JPEG XL needs the
    ``pillow-jxl-plugin`` of the ``bench`` extra)."""
    from PIL import Image, features

    formats: list[tuple[str, dict]] = [("JPEG", {"quality": 90}), ("WEBP", {"quality": 80})]
    if features.check("avif"):
        formats.append(("AVIF", {"quality": 60}))
    try:
        import pillow_jxl  # noqa: F401 - registers the JXL format with Pillow

        formats.append(("JXL", {"quality": 80}))
    except ImportError:
        pass
    Image.init()  # registers every plugin, so SAVE lists them all
    return [(fmt, opts) for fmt, opts in formats if fmt in Image.SAVE]


class _NumpyDecoder:
    """The exact analysis (:class:`InferenceModel`) with the NumPy synthesis, one BLAS thread."""

    def __init__(self, model: object) -> None:
        from aezip.model.inference import InferenceModel

        self.encoder = InferenceModel(model.net)  # type: ignore[attr-defined]
        self.synthesis = model.cpu_synthesis()  # type: ignore[attr-defined]

    def analyze(self, x: object, quality: int) -> object:
        return self.encoder.analyze(x, quality)  # type: ignore[arg-type]

    def synthesize(self, y: object, quality: int) -> np.ndarray:
        from aezip.model.runtime import blas_one_thread

        with blas_one_thread():
            return self.synthesis(y[0].numpy(), quality)  # type: ignore[index]


def _time(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def peak_run(cmd: list[str], cwd: str | Path | None = None) -> tuple[float, float]:
    """Run a command; its wall seconds and its own peak RSS in GiB.

    From ``wait4``: this child only, not ``RUSAGE_CHILDREN`` (the largest of every child waited
    for so far). Linux counts the memory of the process that started the child in the child's
    peak (vfork, then exec), so the caller must stay small: see :func:`memory`.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return time.perf_counter() - start, usage.ru_maxrss / 2**20


def image_size(megapixels: float) -> tuple[int, int]:
    """(width, height) of a 4:3 image of about ``megapixels``."""
    side = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    return side, int(megapixels * 1e6 / side)


def synthetic_png(path: Path, megapixels: float) -> None:
    """Write a smooth synthetic RGB PNG of :func:`image_size` (``megapixels``)."""
    from PIL import Image

    w, h = image_size(megapixels)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.stack([128 + 60 * np.sin(xx * f) * np.cos(yy * f) for f in (0.01, 0.02, 0.03)], -1)
    Image.fromarray(rgb.astype(np.uint8)).save(path, compress_level=1)


def memory(megapixels: float, extra: list[str] | None = None) -> dict[str, float]:
    """Peak RSS (GiB) and wall seconds of ``aezip pack`` and of ``aezip unpack`` of one synthetic
    PNG of ``megapixels``, each its own process (default settings, plus ``extra`` options).

    The PNG is written by another process, so this one stays small (see :func:`peak_run`).
    """
    import multiprocessing

    out: dict[str, float] = {}
    aezip = [sys.executable, "-m", "aezip"]
    with tempfile.TemporaryDirectory(prefix="aezip-mem-") as tmp:
        for name, mp in (("tiny.png", 0.01), ("big.png", megapixels)):
            writer = multiprocessing.get_context("spawn").Process(target=synthetic_png, args=(Path(tmp) / name, mp))
            writer.start()
            writer.join()
        out["width"], out["height"] = image_size(megapixels)
        # What every pack costs (Python, torch, the model), from a 0.01 MP image:
        out["baseline_s"], out["baseline_gib"] = peak_run([*aezip, "pack", "tiny.png", "tiny.aez"], tmp)
        for step, args in (("pack", ["pack", "big.png", "big.aez"]), ("unpack", ["unpack", "big.aez", "out"])):
            out[f"{step}_s"], out[f"{step}_peak_gib"] = peak_run([*aezip, *args, *(extra or [])], tmp)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image_dir", type=Path, nargs="?")
    parser.add_argument("--reference", type=Path, help="checkout of the code to compare with (e.g. e9d10b3)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the dataset rows")
    parser.add_argument("--epochs", type=int, default=2, help="timed dataset epochs (best is kept)")
    parser.add_argument("--limit", type=int, default=4, help="images for the in-process transform rows")
    parser.add_argument("--memory", type=float, help="measure peak memory for an image of this many MP")
    args = parser.parse_args()
    if args.memory:
        m = memory(args.memory)
        print(f"{m['width']:.0f}x{m['height']:.0f} px synthetic PNG, peak RSS of each process:")
        print(f"pack of a 0.01 MP image (baseline): {m['baseline_gib']:.2f} GiB")
        for step in ("pack", "unpack"):
            peak = m[f"{step}_peak_gib"]
            print(f"{step}: {peak:.2f} GiB ({peak * 2**30 / 1e9:.2f} GB), {m[f'{step}_s']:.0f} s")
        return
    if args.image_dir is None:
        parser.error("IMAGE_DIR is required")
    if args.reference:
        with tempfile.TemporaryDirectory(prefix="aezip-ds-") as tmp:
            archive = Path(tmp) / "reference.aez"
            best = end_to_end(args.image_dir, args.reference, args.rounds, keep=archive)
            rates = dataset_epochs(archive, args.reference, args.workers, args.epochs)
        ref = best["reference"]
        print(f"End to end on {args.image_dir} (best of {args.rounds}, wall seconds, process start included):\n")
        print("| code | pack s | unpack s | pack speed-up | unpack speed-up |")
        print("|---|---:|---:|---:|---:|")
        for name, t in best.items():
            print(
                f"| {name} | {t['pack']:.1f} | {t['unpack']:.1f} | "
                f"{ref['pack'] / t['pack']:.2f}x | {ref['unpack'] / t['unpack']:.2f}x |"
            )
        print(f"\nImageArchiveDataset, {args.workers} workers, batch 1, best of {args.epochs} epochs after a warm-up")
        print("(the reference's archive, read by both):\n")
        print("| code | images/s | speed-up |")
        print("|---|---:|---:|")
        for name, rate in rates.items():
            print(f"| {name} | {rate:.2f} | {rate / rates['reference']:.2f}x |")
        print()
    rows = transforms(args.image_dir, args.limit)
    print(f"In process, one thread, first {args.limit} images: MP/s\n")
    print("| path | analysis (encode) | synthesis (decode) |")
    print("|---|---:|---:|")
    for name, enc, dec in rows:
        print(f"| {name} | {enc:.2f} | {dec:.2f} |" if enc else f"| {name} | | {dec:.2f} |")


if __name__ == "__main__":
    main()
