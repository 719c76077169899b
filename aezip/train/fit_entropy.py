"""Fit the context tables of ``ans-ctx`` on the frozen latents of a model.

    python -m aezip.train.fit_entropy MODEL IMAGE_DIR [--out PATH] [--limit N]

writes ``MODEL``'s side file (``NAME.ctx.safetensors`` beside it unless ``--out`` is given).
Only the latents of the training images are used: the network is not touched, so the model's
sha256 (the id archives record) stays the same. Per quality the fit takes:

* the channel order: decreasing mean ``|latent|``, so the busiest channels set the context;
* ``contexts - 1`` activity thresholds per channel: quantiles of its activity (integers);
* one table per (channel, context): the histogram of that context plus ``SMOOTHING`` samples'
  worth of the channel's whole histogram, so rare contexts fall back on the channel's shape.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from aezip.entropy.context import ContextTables, context_to_bytes
from aezip.entropy.tables import CdfTables
from aezip.model.side_files import side_file_path
from aezip.model.weights import LoadedModel, load_model

CONTEXTS = 8
CAP = 8
SMOOTHING = 4.0
TABLE_RANGE = 512
TAIL_MASS = 1e-4


def image_latents(model: LoadedModel, images: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Integer latents (C, h, w) of uint8 RGB images, per quality (as ``Codec`` computes them)."""
    from aezip.codec.codec import pad_to_multiple

    net, qualities = model.net, model.config.qualities
    out: list[list[np.ndarray]] = [[] for _ in range(qualities)]
    with torch.inference_mode():
        gains = [net.gain(q) for q in range(qualities)]
        for img in images:
            x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
            hidden = net.analysis[:-1](pad_to_multiple(x, model.config.stride))
            y = net.analysis[-1](hidden.float())
            for q in range(qualities):
                out[q].append(torch.round(y * gains[q]).to(torch.int32)[0].numpy())
    return out


def fit_quality(latents: list[np.ndarray], contexts: int = CONTEXTS, cap: int = CAP) -> ContextTables:
    """Context tables for one quality from latents (C, h, w) of several images."""
    channels = latents[0].shape[0]
    flat = np.concatenate([lat.reshape(channels, -1).astype(np.int64) for lat in latents], axis=1)
    order = np.argsort(-np.abs(flat).mean(axis=1), kind="stable").astype(np.int32)
    act = np.minimum(np.abs(flat[order]), cap)
    before = np.cumsum(act, axis=0) - act
    levels = np.arange(1, contexts) / contexts
    thresholds = np.zeros((channels, contexts - 1), dtype=np.int64)
    width = 2 * TABLE_RANGE + 1
    pmf = np.zeros((channels * contexts, width))
    for i, c in enumerate(order):
        thresholds[c] = np.maximum.accumulate(np.quantile(before[i], levels, method="higher").astype(np.int64))
        k = np.searchsorted(thresholds[c], before[i], side="right")
        v = np.clip(flat[c], -TABLE_RANGE, TABLE_RANGE) + TABLE_RANGE
        counts = np.zeros((contexts, width))
        np.add.at(counts, (k, v), 1.0)
        whole = counts.sum(axis=0) + 1e-3
        pmf[c * contexts : (c + 1) * contexts] = counts + SMOOTHING * whole / whole.sum()
    tables = CdfTables.from_pmf(pmf, -TABLE_RANGE, tail_mass=TAIL_MASS)
    return ContextTables(order, thresholds.astype(np.int32), tables, cap)


def fit_model(model: LoadedModel, images: list[np.ndarray], contexts: int = CONTEXTS, cap: int = CAP) -> bytes:
    """The side-file bytes for ``model``, fitted on ``images`` (uint8 RGB arrays)."""
    per_quality = image_latents(model, images)
    fitted = [fit_quality(lat, contexts, cap) for lat in per_quality]
    extra = {"images": str(len(images)), "contexts": str(contexts), "cap": str(cap)}
    return context_to_bytes(fitted, model.sha256, extra)


def main(argv: list[str] | None = None) -> Path:
    """Command line: fit and write the side file; returns its path."""
    from aezip.train.data import list_images, load_rgb

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("images", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--contexts", type=int, default=CONTEXTS)
    args = parser.parse_args(argv)
    model = load_model(args.model)
    images = [load_rgb(p) for p in list_images(args.images)[: args.limit]]
    out = args.out or side_file_path(args.model)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(fit_model(model, images, args.contexts))
    tmp.replace(out)
    print(f"wrote {out} ({len(images)} images)")
    return out


if __name__ == "__main__":
    main()
