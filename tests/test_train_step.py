"""Every training-step variant runs on the CPU, computes the eager loss, and ``--variant auto`` picks one.

The compiled variants use the ``aot_eager`` backend here: it traces and differentiates the same
graph as ``inductor`` (graph breaks, guards, autograd) without a C++ build, so what the GPU visit
compiles has been traced before the day.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from aezip.cli.app import TRAIN_VARIANT_CHOICES, main
from aezip.errors import AezipError
from aezip.model.autoencoder import Autoencoder
from aezip.model.config import ModelConfig
from aezip.train.step import VARIANT_CHOICES, VARIANTS, TrainStep, default_candidates, parse_candidates
from tests.conftest import photo_like

LAMBDAS = (0.005, 0.05)


def _setup() -> tuple[Autoencoder, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = Autoencoder(ModelConfig(levels=2, channels=8, bottleneck=8, lambdas=LAMBDAS))
    x = torch.from_numpy(photo_like(32, 32, seed=3)).permute(2, 0, 1).float().div(255).repeat(4, 1, 1, 1)
    return net, x, torch.tensor([0, 0, 1, 1]), torch.tensor(LAMBDAS)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_matches_the_eager_loss_and_trains(name: str) -> None:
    net, x, q, lambdas = _setup()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    eager = TrainStep(net, opt, lambdas, VARIANTS["eager"])
    step = TrainStep(net, opt, lambdas, VARIANTS[name], backend="aot_eager")
    torch.manual_seed(1)
    reference = eager.loss(x, q)[0].item()
    torch.manual_seed(1)
    assert step.loss(x, q)[0].item() == pytest.approx(reference, rel=1e-5)
    before = [p.detach().clone() for p in net.parameters()]
    losses = [step(x, q)[0].item() for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_balanced_flag_gives_the_same_rate_as_looking() -> None:
    net, x, q, _ = _setup()
    torch.manual_seed(2)
    looked = net(x, q).bpp
    torch.manual_seed(2)
    promised = net(x, q, balanced=True).bpp
    torch.manual_seed(2)
    looped = net(x, q, balanced=False).bpp
    assert torch.allclose(looked, promised) and torch.allclose(looked, looped, rtol=1e-5)


def test_candidates_parse_and_default_to_multiples_of_the_qualities() -> None:
    assert parse_candidates("eager:64, compile:128") == [("eager", 64), ("compile", 128)]
    for bad in ("eager", "warp:8", "eager:0", "eager:x"):
        with pytest.raises(AezipError):
            parse_candidates(bad)
    assert all(batch % 8 == 0 for _, batch in default_candidates(64, 8))
    assert {name for name, _ in default_candidates(64, 8)} == set(VARIANTS)


def test_cli_spells_the_variants_out() -> None:
    assert TRAIN_VARIANT_CHOICES == VARIANT_CHOICES


def test_auto_benchmarks_then_trains_with_the_fastest(tmp_path: Path) -> None:
    data = tmp_path / "train"
    data.mkdir()
    for i in range(4):
        Image.fromarray(photo_like(48, 48, seed=i)).save(data / f"{i}.png")
    out = tmp_path / "m.safetensors"
    args = ["train", "--data", str(data), "--out", str(out), "--steps", "20", "--channels", "8", "--bottleneck", "8"]
    args += ["--levels", "2", "--crop", "32", "--batch", "2", "--device", "cpu", "--lambdas", "0.005,0.05"]
    args += ["--variant", "auto", "--bench", "eager:2,fp32:2,compile:4", "--bench-seconds", "0.5"]
    args += ["--compile-backend", "aot_eager"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.with_name(out.name + ".log.jsonl").read_text().splitlines()]
    bench = next(r for r in records if "benchmark" in r)
    assert [(c["variant"], c["batch"]) for c in bench["benchmark"]] == [("eager", 2), ("fp32", 2), ("compile", 4)]
    assert all(c["loss_ok"] and c["px_per_s"] > 0 and c["steps"] >= 1 for c in bench["benchmark"])
    fastest = max(bench["benchmark"], key=lambda c: c["px_per_s"])
    assert bench["chosen"] == f"{fastest['variant']}:{fastest['batch']}"
    card = json.loads(out.with_name(out.name + ".json").read_text())
    benchmarked = sum(c["steps"] + 2 for c in bench["benchmark"])  # two warm-up steps each
    assert card["steps"] == max(20, benchmarked)  # the benchmark's steps are training steps
