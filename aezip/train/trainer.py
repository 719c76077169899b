"""The training loop behind ``aezip train``.

One variable-rate model learns every quality at once. Each batch mixes the qualities (image
``i`` of a batch trains quality ``i mod Q``, shuffled), so every step updates every gain vector
and every prior; each image's loss uses its own λ. Rate uses additive uniform noise; the decoder
sees straight-through rounded latents ("mixed quantization"), which converges faster in few
steps. Priors and gains learn 10× faster than the transforms: they start far from their
optimum and would otherwise lag behind (measured on the first CPU model: gains at the base rate
moved less than 0.15 in 22k steps). An exponential moving average of the weights is what gets
exported. Runs on CUDA when present (TF32, bf16 autocast for convolutions; GDN and priors stay
fp32; crops are cut on the GPU; fused Adam), otherwise on the CPU. How a step runs (eager,
compiled, CUDA graphs) is a variant of :mod:`aezip.train.step`; ``--variant auto`` times the
candidates first and trains on with the fastest. A checkpoint (weights, moving average,
Adam state, counters; safetensors) is written every few minutes and at the end, so ``--resume``
continues an interrupted run.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

import torch
from safetensors.torch import load_file, save_file

from aezip.codec.codec import pick_device
from aezip.codec.metrics import psnr_from_mse
from aezip.errors import AezipError
from aezip.model.autoencoder import Autoencoder
from aezip.model.config import DEFAULT_LAMBDAS, ModelConfig
from aezip.model.weights import load_model
from aezip.train.data import CropSampler
from aezip.train.export import export_model
from aezip.train.loss import per_image_distortion
from aezip.train.options import GAIN_LR_SCALE, PRIOR_LR_SCALE, TrainOptions, TrainState
from aezip.train.reladder import reladder
from aezip.train.step import VARIANTS, TrainStep, Variant, benchmark, default_candidates, parse_candidates


def _save_checkpoint(
    path: Path, net: Autoencoder, ema: Autoencoder, opt: torch.optim.Optimizer, state: TrainState
) -> None:
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    for idx, slot in opt.state_dict()["state"].items():
        for key, value in slot.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value.detach().cpu().reshape(value.shape).contiguous()
    meta = {"config": net.config.to_json(), "state": json.dumps(asdict(state))}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def _load_checkpoint(path: Path) -> tuple[Autoencoder, dict[str, torch.Tensor], dict, TrainState]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    tensors = load_file(str(path))
    net = Autoencoder(ModelConfig.from_json(meta["config"]))
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    ema_state = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    optim_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            optim_state.setdefault(int(idx), {})[name] = value
    state = TrainState(**json.loads(meta["state"]))
    return net, ema_state, optim_state, state


def _build(
    options: TrainOptions, device: torch.device
) -> tuple[Autoencoder, Autoencoder, torch.optim.Adam, TrainState]:
    """Fresh, resumed (``--resume``: checkpoint) or initialised (``--init``: model file) network.

    Returns the trained network, its moving average, the optimizer and the counters.
    """
    state = TrainState()
    optim_state: dict = {}
    ema_state: dict[str, torch.Tensor] = {}
    if options.resume and options.checkpoint_path.exists():
        net, ema_state, optim_state, state = _load_checkpoint(options.checkpoint_path)
    elif options.init is not None:
        loaded = load_model(options.init)
        net = loaded.net
        if options.lambdas is not None and tuple(options.lambdas) != net.config.lambdas:
            net = reladder(net, tuple(options.lambdas))
        card = loaded.metadata
        state.prior_steps = int(card.get("cumulative_steps", card.get("steps", 0)))
        state.prior_seconds = float(card.get("cumulative_seconds", card.get("seconds", 0.0)))
        state.history = json.loads(card.get("history", "[]"))
    elif options.resume:
        raise AezipError(f"--resume: no checkpoint at {options.checkpoint_path}")
    else:
        config = ModelConfig(
            levels=options.levels,
            channels=options.channels,
            bottleneck=options.bottleneck,
            lambdas=options.lambdas or DEFAULT_LAMBDAS,
        )
        net = Autoencoder(config)
    net = net.to(device).to(memory_format=torch.channels_last)
    net.train()
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    if ema_state:
        ema.load_state_dict(ema_state)
    # The priors start broad and must narrow by an order of magnitude within a short run, and the
    # gains must spread over the λ ladder: at the main learning rate both lag far behind the
    # transforms, so they learn 10× faster.
    prior_params = list(net.priors.parameters())
    gain_params = [net.log_gain, net.log_inv_gain]
    special = {id(p) for p in prior_params + gain_params}
    main_params = [p for p in net.parameters() if id(p) not in special]
    opt = torch.optim.Adam(
        [
            {"params": main_params, "lr_scale": 1.0},
            {"params": prior_params, "lr_scale": PRIOR_LR_SCALE},
            {"params": gain_params, "lr_scale": GAIN_LR_SCALE},
        ],
        lr=options.lr,
        fused=device.type == "cuda",
    )
    if optim_state:
        full = opt.state_dict()
        full["state"] = {i: {k: v.to(device) for k, v in s.items()} for i, s in optim_state.items()}
        opt.load_state_dict(full)
    return net, ema, opt, state


@torch.no_grad()
def _update_ema(ema: Autoencoder, net: Autoencoder, decay: float) -> None:
    """``ema ← decay·ema + (1 − decay)·net`` for every float tensor (buffers copied)."""
    ema_params = list(ema.parameters())
    torch._foreach_lerp_(ema_params, list(net.parameters()), 1.0 - decay)
    for target, source in zip(ema.buffers(), net.buffers(), strict=True):
        target.copy_(source)


def mixed_qualities(batch: int, qualities: int, generator: torch.Generator) -> torch.Tensor:
    """Quality index per image of a batch, sorted: every quality equally often when ``batch``
    is a multiple of the number of qualities (the model then evaluates all priors in one pass),
    otherwise as evenly as the batch allows, the remainder drawn at random."""
    full, rest = divmod(batch, qualities)
    picks = torch.arange(qualities).repeat_interleave(full)
    extra = torch.randperm(qualities, generator=generator)[:rest]
    return torch.cat([picks, extra]).sort().values


def train(options: TrainOptions) -> Path:
    """Run (or resume) training, then export the model file and its card; returns the model path."""
    device = pick_device(options.device)
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    sampler = CropSampler(options.data, options.crop, seed=options.seed + 1, rescale=options.rescale).to(device)
    net, ema, opt, state = _build(options, device)
    qualities = net.config.qualities
    lambdas = torch.tensor(net.config.lambdas, device=device)
    gen = torch.Generator().manual_seed(options.seed + 2 + state.step)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    log = options.log_path.open("a", encoding="utf-8")
    bar = _progress(options, state.step)
    start = time.monotonic() - state.seconds
    last_ckpt = time.monotonic()

    def make_step(variant: Variant) -> TrainStep:
        return TrainStep(net, opt, lambdas, variant, options.loss, options.clip, options.compile_backend)

    def after_step() -> None:
        state.step += 1
        _update_ema(ema, net, min(options.ema, (1 + state.step) / (10 + state.step)))
        if bar is not None:
            bar.update(1)

    batch = options.batch
    try:
        if options.variant == "auto":
            step, batch = _benchmarked_step(options, make_step, sampler, gen, qualities, after_step, log)
        else:
            step = make_step(VARIANTS[options.variant])
        while state.step < options.steps:
            elapsed = time.monotonic() - start
            frac = state.step / options.steps
            if options.minutes:
                if elapsed >= options.minutes * 60:
                    break
                frac = max(frac, elapsed / (options.minutes * 60))
            lr = options.lr * (0.1 if frac >= options.lr_drop_at else 1.0)
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_scale"]
            q = mixed_qualities(batch, qualities, gen)
            x = sampler.batch(batch).contiguous(memory_format=torch.channels_last)
            loss, out = step(x, q)
            after_step()
            if state.step % options.log_every == 0 or state.step == options.steps:
                record = _log_record(state, start, loss, out.x_hat.detach(), x, out.bpp.detach(), q, lr)
                log.write(json.dumps(record) + "\n")
                log.flush()
                if bar is not None:
                    bar.set_postfix(loss=f"{record['loss']:.3f}", psnr=f"{record['psnr']:.2f}", bpp=record["bpp"])
            if time.monotonic() - last_ckpt > options.checkpoint_minutes * 60:
                state.seconds = time.monotonic() - start
                _save_checkpoint(options.checkpoint_path, net, ema, opt, state)
                last_ckpt = time.monotonic()
    finally:
        if bar is not None:
            bar.close()
        log.close()
    state.seconds = time.monotonic() - start
    _save_checkpoint(options.checkpoint_path, net, ema, opt, state)
    return export_model(ema.float().eval(), options, state, sampler, device)


def _benchmarked_step(
    options: TrainOptions,
    make_step: Callable[[Variant], TrainStep],
    sampler: CropSampler,
    gen: torch.Generator,
    qualities: int,
    after_step: Callable[[], None],
    log: TextIO,
) -> tuple[TrainStep, int]:
    """``--variant auto``: time the candidates (as training steps), log and print what each
    measured, and return the fastest step and its batch size."""
    candidates = parse_candidates(options.bench) if options.bench else default_candidates(options.batch, qualities)

    def batches(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return sampler.batch(n).contiguous(memory_format=torch.channels_last), mixed_qualities(n, qualities, gen)

    best, built, results = benchmark(
        make_step, batches, candidates, options.bench_seconds, options.crop, after_step=after_step
    )
    record = {"benchmark": [c.as_dict() for c in results], "chosen": f"{best.variant}:{best.batch}"}
    log.write(json.dumps(record) + "\n")
    log.flush()
    for c in results:
        verdict = f"{c.px_per_s / 1e6:.1f} M px/s" if c.px_per_s else f"not timed ({c.error or 'loss differs'})"
        print(f"step variant {c.variant}:{c.batch}: loss {c.loss}, warm-up {c.warmup_seconds:.1f} s, {verdict}")
    print(f"training with {best.variant}:{best.batch}")
    return built[best.variant], best.batch


def _log_record(
    state: TrainState,
    start: float,
    loss: torch.Tensor,
    x_hat: torch.Tensor,
    x: torch.Tensor,
    bpp: torch.Tensor,
    q: torch.Tensor,
    lr: float,
) -> dict:
    """One log line: loss, then PSNR and estimated bpp at the lowest and highest quality in the batch."""
    mse = per_image_distortion(x_hat, x, "mse").cpu()
    bpp = bpp.cpu()
    record: dict = {"step": state.step, "seconds": round(time.monotonic() - start, 1), "loss": round(loss.item(), 4)}
    record["psnr"] = round(psnr_from_mse(mse.mean().item()), 3)
    record["bpp"] = round(bpp.mean().item(), 4)
    for qi in (int(q.min()), int(q.max())):
        rows = q == qi
        record[f"q{qi + 1}_psnr"] = round(psnr_from_mse(mse[rows].mean().item()), 3)
        record[f"q{qi + 1}_bpp"] = round(bpp[rows].mean().item(), 4)
    record["lr"] = lr
    return record


def _progress(options: TrainOptions, initial: int):  # noqa: ANN202 - tqdm is optional at type level
    if not options.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=options.steps, initial=initial, unit="step", dynamic_ncols=True, disable=None)
