"""Move a trained model to a new λ ladder, keeping its transforms.

``aezip train --init MODEL --lambdas …`` continues a model with different qualities (for
example a lower first rung to reach lower bit rates). The analysis and synthesis weights carry
over unchanged. Each new quality starts from the gains the old ladder implies at its λ::

    log-gain(λ) = piecewise-linear in ln λ through the old (ln λ_q, log-gain_q) knots,
                  extended beyond the ends with the first/last segment's per-channel slope

and from the entropy model of the old quality nearest in ln λ. Training then refines both
(gains and priors learn 10× faster than the transforms).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from aezip.errors import AezipError
from aezip.model.autoencoder import Autoencoder

_PER_QUALITY = ("log_gain", "log_inv_gain", "priors.")


def interpolate_rows(knots: list[float], rows: torch.Tensor, targets: list[float]) -> torch.Tensor:
    """Piecewise-linear interpolation of ``rows`` (one per knot) at ``targets``, per column.

    ``knots`` must increase strictly; outside their range the nearest segment is extended.
    With a single knot every target gets that row.
    """
    if len(knots) == 1:
        return rows[:1].repeat(len(targets), 1)
    if any(b <= a for a, b in zip(knots, knots[1:], strict=False)):
        raise AezipError("the model's λ ladder must increase strictly to be re-laddered")
    out = []
    for t in targets:
        i = max(0, min(len(knots) - 2, sum(1 for k in knots if k <= t) - 1))
        w = (t - knots[i]) / (knots[i + 1] - knots[i])
        out.append(rows[i] + w * (rows[i + 1] - rows[i]))
    return torch.stack(out)


def reladder(net: Autoencoder, lambdas: tuple[float, ...]) -> Autoencoder:
    """A copy of ``net`` with the ladder ``lambdas``: same transforms, gains and priors carried over."""
    old = [math.log(v) for v in net.config.lambdas]
    new = [math.log(v) for v in lambdas]
    out = Autoencoder(dataclasses.replace(net.config, lambdas=tuple(lambdas)))
    state = net.state_dict()
    shared = {k: v for k, v in state.items() if not k.startswith(_PER_QUALITY)}
    missing, unexpected = out.load_state_dict(shared, strict=False)
    if unexpected or any(not k.startswith(_PER_QUALITY) for k in missing):
        raise AezipError("re-laddering: the model's layers do not match its own architecture")
    with torch.no_grad():
        out.log_gain.copy_(interpolate_rows(old, net.log_gain.detach().float(), new))
        out.log_inv_gain.copy_(interpolate_rows(old, net.log_inv_gain.detach().float(), new))
        for prior, t in zip(out.priors, new, strict=True):
            nearest = min(range(len(old)), key=lambda i: abs(old[i] - t))
            prior.load_state_dict(net.priors[nearest].state_dict())
    return out
