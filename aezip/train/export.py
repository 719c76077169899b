"""Turn a trained network into a shipped model: integer entropy tables, weights file, model card.

Two candidate tables are built per quality: one tabulated from the learned prior, one from
smoothed histograms of the actual quantized latents of the training crops. On briefly trained
models the prior can be poor, so the candidate with the smaller code length on the validation
images (or the training crops, without a validation folder) wins; the card records which.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from aezip.entropy.tables import CdfTables
from aezip.model.autoencoder import Autoencoder
from aezip.model.weights import load_model, model_to_bytes
from aezip.train.data import CropSampler, list_images, load_rgb
from aezip.train.diagnose import diagnose
from aezip.train.options import TrainOptions, TrainState

TABLE_RANGE = 512  # tabulate values -512..512 before trimming the tails
DIAGNOSIS_IMAGES = 8  # validation images for the card's ceiling figures (aezip.train.diagnose)


def latents_of(net: Autoencoder, images: list[torch.Tensor], quality_index: int) -> list[np.ndarray]:
    """Quantized latents (C, h, w) of uint8 images (3, H, W), padded to the model's stride."""
    from aezip.codec.codec import pad_to_multiple

    out = []
    device = next(net.parameters()).device
    with torch.no_grad():
        for img in images:
            x = pad_to_multiple(img.to(device).float().div(255.0).unsqueeze(0), net.config.stride)
            out.append(torch.round(net.analyze(x, quality_index))[0].to(torch.int64).cpu().numpy())
    return out


def _histogram(latents: list[np.ndarray], channels: int) -> np.ndarray:
    counts = np.zeros((channels, 2 * TABLE_RANGE + 1), dtype=np.float64)
    for lat in latents:
        flat = np.clip(lat.reshape(channels, -1), -TABLE_RANGE, TABLE_RANGE) + TABLE_RANGE
        for c in range(channels):
            counts[c] += np.bincount(flat[c], minlength=2 * TABLE_RANGE + 1)
    return counts


def _code_bits(tables: CdfTables, latents: list[np.ndarray]) -> float:
    """Bits the ANS coder would spend, escapes counted at 32 bits each."""
    total = 0.0
    for lat in latents:
        _, escaped = tables.symbolize(lat)
        total += tables.ideal_bits(lat) + 32.0 * escaped.size
    return total


def build_tables(
    net: Autoencoder, train_images: list[torch.Tensor], eval_images: list[torch.Tensor]
) -> tuple[list[CdfTables], list[dict]]:
    """Per-quality tables (prior or histogram, whichever codes ``eval_images`` smaller)."""
    tables: list[CdfTables] = []
    report = []
    channels = net.config.bottleneck
    for q in range(net.config.qualities):
        pmf = net.priors[q].pmf(-TABLE_RANGE, TABLE_RANGE).numpy()
        from_prior = CdfTables.from_pmf(pmf, -TABLE_RANGE)
        from_hist = CdfTables.from_counts(_histogram(latents_of(net, train_images, q), channels), -TABLE_RANGE)
        held_out = latents_of(net, eval_images, q)
        bits = {"prior": _code_bits(from_prior, held_out), "histogram": _code_bits(from_hist, held_out)}
        source = min(bits, key=bits.__getitem__)
        tables.append(from_prior if source == "prior" else from_hist)
        report.append({"quality": q + 1, "source": source, "bits": {k: round(v) for k, v in bits.items()}})
    return tables, report


def export_model(
    net: Autoencoder, options: TrainOptions, state: TrainState, sampler: CropSampler, device: torch.device
) -> Path:
    """Write ``options.out`` (safetensors) and ``options.out`` + ``.json`` (the model card)."""
    train_images = sampler.images[:256]
    val_paths = list_images(options.val)[: options.val_limit] if options.val else []
    eval_images = [torch.from_numpy(load_rgb(p).copy()).permute(2, 0, 1) for p in val_paths] or train_images[:32]
    tables, table_report = build_tables(net, train_images, eval_images)
    diagnosis = diagnose(net, [img.permute(1, 2, 0).numpy() for img in eval_images[:DIAGNOSIS_IMAGES]])
    history = [*state.history, options.command]
    card: dict = {
        "architecture": json.loads(net.config.to_json()),
        "lambdas": list(net.config.lambdas),
        "loss": options.loss,
        "data": str(options.data),
        "validation_data": str(options.val) if options.val else None,
        "steps": state.step,
        "seconds": round(state.seconds, 1),
        "cumulative_steps": state.prior_steps + state.step,
        "cumulative_seconds": round(state.prior_seconds + state.seconds, 1),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
        "torch": torch.__version__,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "command": options.command,
        "history": history,
        "entropy_tables": table_report,
        "diagnosis": diagnosis,
        "exported": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    metadata = {
        "cumulative_steps": str(card["cumulative_steps"]),
        "cumulative_seconds": str(card["cumulative_seconds"]),
        "history": json.dumps(history),
    }
    tmp = options.out.with_name(options.out.name + ".tmp")
    tmp.write_bytes(model_to_bytes(net, tables, metadata, half=True))
    tmp.replace(options.out)
    if val_paths:
        from aezip.train.validate import validate

        card["validation"] = validate(load_model(options.out), val_paths, device=device.type)
    card["sha256"] = load_model(options.out).sha256
    card_path = options.out.with_name(options.out.name + ".json")
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return options.out
