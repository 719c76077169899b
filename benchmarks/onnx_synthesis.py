"""Synthesis (decode) transform: PyTorch against ONNX Runtime, in process, one thread.

Usage (needs ``pip install onnxruntime onnx``; neither is a dependency of aezip)::

    python -m benchmarks.onnx_synthesis ../shared/data/kodak/kodim01.png --rounds 11

The image is encoded once with the shipped default model at ``--quality`` (default 6); its
rounded latents are then decoded by each variant, round by round in turn (so a load spike on a
shared machine hits every variant), and the median CPU time and wall time per variant are
reported, with speeds relative to the PyTorch inference form:

* ``torch inference form``: :class:`aezip.model.inference.InferenceModel` (the GPU decoder; on a
  CPU ``aezip`` now decodes with NumPy, compared in ``benchmarks.cpu_speed``);
* ``torch transposed, channels_last``: the training-form modules on a channels_last input;
* ``ort transposed``: the synthesis exported with the legacy TorchScript exporter
  (``dynamo=False``; dynamic batch, height and width) and run by an ONNX Runtime CPU session with
  one intra-op thread, at graph optimisation level ``all`` (NCHWc layout) and ``extended``.

The largest pixel difference of each variant against the inference form is printed too.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _export(module: torch.nn.Module, example: torch.Tensor) -> bytes:
    """ONNX bytes of ``module`` (latents → pixels) with dynamic batch, height and width."""
    buf = io.BytesIO()
    torch.onnx.export(
        module,
        (example,),
        buf,
        dynamo=False,
        input_names=["y"],
        output_names=["x"],
        dynamic_axes={"y": {0: "b", 2: "h", 3: "w"}, "x": {0: "b", 2: "H", 3: "W"}},
        opset_version=17,
    )
    return buf.getvalue()


def _session(graph: bytes, level: str) -> Callable[[np.ndarray], np.ndarray]:
    """A one-thread ONNX Runtime CPU session for ``graph`` as a function of the input array."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }[level]
    session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
    return lambda y: session.run(None, {"y": y})[0]


def measure(image: Path, quality: int, rounds: int) -> list[tuple[str, float, float, float]]:
    """(variant, median CPU s, median wall s, max pixel difference) per variant."""
    from aezip.model.inference import InferenceModel, one_thread
    from aezip.model.registry import ModelStore

    torch.set_num_threads(1)
    net = ModelStore().default().net.eval()
    fast = InferenceModel(net)
    q = quality - 1
    rgb = np.asarray(Image.open(image).convert("RGB"))
    stride = net.config.stride
    h, w = -(-rgb.shape[0] // stride) * stride, -(-rgb.shape[1] // stride) * stride
    rgb = np.pad(rgb, ((0, h - rgb.shape[0]), (0, w - rgb.shape[1]), (0, 0)), mode="edge")
    with torch.inference_mode(), one_thread():
        x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float().div_(255)
        y_hat = torch.round(net.analyze(x, q))
        scaled = (y_hat * net.inv_gain(q)).contiguous()
    print(f"{image.name}: {w}x{h} px, latents {tuple(y_hat.shape)}, quality {quality}")
    with torch.no_grad():
        transposed = _export(net.synthesis, scaled[:, :, :8, :8])
    scaled_np = scaled.numpy()
    scaled_cl = scaled.contiguous(memory_format=torch.channels_last)
    variants: dict[str, Callable[[], object]] = {
        "torch inference form": lambda: fast.synthesize(y_hat, q),
        "torch transposed, channels_last": lambda: net.synthesis(scaled_cl),
    }
    for level in ("all", "extended"):
        run = _session(transposed, level)
        variants[f"ort transposed ({level})"] = lambda run=run: run(scaled_np)

    def pixels(out: object) -> torch.Tensor:
        return torch.as_tensor(out).float().clamp(0, 1).mul(255).round()

    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    with torch.inference_mode(), one_thread():
        reference = pixels(variants["torch inference form"]())
        diffs = {name: (pixels(fn()) - reference).abs().max().item() for name, fn in variants.items()}
        for _ in range(rounds):
            for name, fn in variants.items():
                wall, cpu = time.perf_counter(), time.process_time()
                fn()
                times[name].append((time.process_time() - cpu, time.perf_counter() - wall))
    return [
        (name, statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts), diffs[name])
        for name, ts in times.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("--quality", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime
    except ImportError as e:
        raise SystemExit(f"{e.name} is missing: pip install onnxruntime onnx") from None

    rows = measure(args.image, args.quality, args.rounds)
    cpu0, wall0 = rows[0][1], rows[0][2]
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, one thread, {args.rounds} rounds")
    print(f"{'variant':34s} {'CPU ms':>7s} {'speed-up':>8s} {'wall ms':>8s} {'speed-up':>8s} {'max px diff':>11s}")
    for name, cpu, wall, diff in rows:
        print(f"{name:34s} {cpu * 1e3:7.0f} {cpu0 / cpu:7.2f}x {wall * 1e3:8.0f} {wall0 / wall:7.2f}x {diff:11.0f}")


if __name__ == "__main__":
    main()
