"""One training step, in interchangeable forms, and the short benchmark that picks the fastest.

A GPU visit is short, so the step must use the hardware well; which form does depends on the
chip, the driver and the PyTorch build, so it is measured on the day rather than assumed::

    batch (uint8 sources on the device → crops, flips)    q (qualities, balanced and sorted)
          │                                                │
          ▼                                                ▼
    loss = λ[q]·255²·MSE + bpp        ◄── forward (eager, or compiled by torch.compile)
          │ backward, clip, Adam (fused on CUDA), EMA
          ▼
    weights

Variants (:data:`VARIANTS`): ``eager`` (bf16 convolutions under autocast on CUDA, GDN and
priors in fp32, as before), ``fp32`` (no autocast), ``compile`` (the forward and loss compiled
by ``torch.compile``: elementwise GDN/rate work fused into few kernels; the backward is compiled
with it), ``graphs`` (the same in ``reduce-overhead`` mode: CUDA graphs, no per-kernel launch
cost). No variant synchronises with the host: the loss stays a device tensor until a logging
step reads it.

:func:`benchmark` checks each candidate's loss against the eager loss on one fixed batch (a
variant that computes something else is dropped, not timed), then times each for a share of
the budget and returns the fastest in pixels per second. Its steps are real training steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from aezip.errors import AezipError
from aezip.model.autoencoder import Autoencoder, ForwardResult
from aezip.train.loss import rd_loss


@dataclass(frozen=True)
class Variant:
    """How a step runs: bf16 autocast (CUDA only) and the ``torch.compile`` mode, if any."""

    name: str
    autocast: bool
    compile_mode: str | None


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("eager", autocast=True, compile_mode=None),
        Variant("fp32", autocast=False, compile_mode=None),
        Variant("compile", autocast=True, compile_mode="default"),
        Variant("graphs", autocast=True, compile_mode="reduce-overhead"),
    )
}
#: ``--variant`` choices: a variant, or ``auto`` (benchmark, then train with the fastest).
VARIANT_CHOICES = ("auto", *VARIANTS)


class TrainStep:
    """Forward, loss, backward, gradient clipping and optimizer update for one variant.

    ``backend`` is ``torch.compile``'s backend: ``inductor`` for real runs; tests on a CPU use
    ``aot_eager``, which traces and differentiates the same graph without generating C++.
    """

    def __init__(
        self,
        net: Autoencoder,
        opt: torch.optim.Optimizer,
        lambdas: torch.Tensor,
        variant: Variant,
        loss_kind: str = "mse",
        clip: float = 1.0,
        backend: str = "inductor",
    ) -> None:
        self.net, self.opt, self.lambdas, self.variant = net, opt, lambdas, variant
        self.loss_kind, self.clip = loss_kind, clip
        self.device = lambdas.device
        self.qualities = net.config.qualities
        self._forward: Callable[..., tuple[torch.Tensor, ForwardResult]] = self._loss
        if variant.compile_mode is not None:
            mode = variant.compile_mode if backend == "inductor" else None  # modes are inductor's
            self._forward = torch.compile(self._loss, mode=mode, backend=backend, dynamic=False)

    def _loss(
        self, x: torch.Tensor, q: torch.Tensor, lam: torch.Tensor, balanced: bool
    ) -> tuple[torch.Tensor, ForwardResult]:
        use_amp = self.variant.autocast and self.device.type == "cuda"
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = self.net(x, q, balanced=balanced)
        return rd_loss(out.x_hat, x, out.bpp, lam, self.loss_kind), out

    def loss(self, x: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, ForwardResult]:
        """The loss of ``x`` at qualities ``q`` (a CPU tensor), and the forward result; no update."""
        k = q.numel() // self.qualities
        balanced = k > 0 and torch.equal(q, torch.arange(self.qualities).repeat_interleave(k))
        q_dev = q.to(self.device, non_blocking=True)
        return self._forward(x, q_dev if balanced else q, self.lambdas[q_dev], balanced)

    def __call__(self, x: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, ForwardResult]:
        """One update of the weights; returns the loss before it and the forward result."""
        loss, out = self.loss(x, q)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.clip)
        self.opt.step()
        return loss.detach(), out


@dataclass
class Candidate:
    """One benchmarked configuration and what it measured."""

    variant: str
    batch: int
    loss: float | None = None
    loss_ok: bool = False
    warmup_seconds: float = 0.0
    steps: int = 0
    seconds: float = 0.0
    px_per_s: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def parse_candidates(spec: str) -> list[tuple[str, int]]:
    """``"eager:64,compile:128"`` → ``[("eager", 64), ("compile", 128)]``."""
    out = []
    for item in spec.split(","):
        name, _, batch = item.strip().partition(":")
        if name not in VARIANTS or not batch.isdigit() or int(batch) < 1:
            raise AezipError(
                f"bad benchmark candidate {item!r}: expected VARIANT:BATCH with VARIANT in {list(VARIANTS)}"
            )
        out.append((name, int(batch)))
    return out


def default_candidates(batch: int, qualities: int) -> list[tuple[str, int]]:
    """Eager and fp32 at ``batch``; eager, compiled and CUDA-graph steps at twice it (rounded to
    a multiple of the qualities, so every batch trains all of them in one pass)."""
    double = max(qualities, (2 * batch) // qualities * qualities)
    return [("eager", batch), ("fp32", batch), ("eager", double), ("compile", double), ("graphs", double)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark(
    make_step: Callable[[Variant], TrainStep],
    batches: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    candidates: Sequence[tuple[str, int]],
    seconds: float,
    crop: int,
    rtol: float = 0.02,
    after_step: Callable[[], None] | None = None,
) -> tuple[Candidate, dict[str, TrainStep], list[Candidate]]:
    """Check, then time, every candidate; returns the fastest, the built steps and every result.

    ``batches(n)`` gives a training batch of ``n`` crops and its qualities. The check compares
    each variant's loss with the eager loss on the same fixed batch and the same weights
    (relative tolerance ``rtol``: bf16 and the noise draws of compiled code differ slightly);
    each timed share starts after two warm-up steps (compilation, graph capture) and ends with
    a device synchronisation. ``after_step`` runs after every step (the caller's EMA update and
    counters), so the benchmark's steps are training steps like any other.
    """
    steps: dict[str, TrainStep] = {}
    results = [Candidate(name, batch) for name, batch in candidates]
    names = list(dict.fromkeys(["eager", *(c.variant for c in results)]))
    x0, q0 = batches(min(c.batch for c in results))
    reference: float | None = None
    for name in names:
        t0 = time.perf_counter()
        try:
            steps[name] = make_step(VARIANTS[name])
            value = float(steps[name].loss(x0, q0)[0].detach())
        except Exception as exc:  # a variant this PyTorch or device cannot run is skipped, not fatal
            for c in results:
                if c.variant == name:
                    c.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            steps.pop(name, None)
            continue
        if name == "eager":
            reference = value
        for c in results:
            if c.variant == name:
                c.loss, c.warmup_seconds = value, time.perf_counter() - t0
                c.loss_ok = reference is not None and abs(value - reference) <= rtol * abs(reference)
    runnable = [c for c in results if c.loss_ok]
    if not runnable:
        raise AezipError("no training-step variant could run: " + "; ".join(f"{c.variant}: {c.error}" for c in results))
    share = seconds / len(runnable)
    device = next(iter(steps.values())).device
    for c in runnable:
        step = steps[c.variant]
        try:
            t0 = time.perf_counter()
            for _ in range(2):
                step(*batches(c.batch))
                if after_step:
                    after_step()
            _sync(device)
            c.warmup_seconds += time.perf_counter() - t0
            start = time.perf_counter()
            while c.steps == 0 or time.perf_counter() - start < share:
                step(*batches(c.batch))
                if after_step:
                    after_step()
                c.steps += 1
                if c.steps % 8 == 0:
                    _sync(device)
            _sync(device)
            c.seconds = time.perf_counter() - start
            c.px_per_s = c.steps * c.batch * crop * crop / c.seconds
        except Exception as exc:
            c.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            c.loss_ok = False
    timed = [c for c in runnable if c.loss_ok and c.px_per_s > 0]
    if not timed:
        raise AezipError("every training-step variant failed while timed")
    return max(timed, key=lambda c: c.px_per_s), steps, results
