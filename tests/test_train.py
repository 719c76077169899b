"""Training pipeline on a tiny configuration: the loss falls, resume works, the model is usable."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from aezip.cli.app import main
from aezip.train.trainer import TrainOptions, train
from tests.conftest import photo_like

TINY = ["--channels", "8", "--bottleneck", "8", "--levels", "2", "--crop", "32", "--batch", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    for split, count in (("train", 6), ("val", 1)):
        (root / split).mkdir()
        for i in range(count):
            Image.fromarray(photo_like(48, 64, seed=i + 10 * (split == "val"))).save(root / split / f"{i}.png")
    return root / "train", root / "val"


@pytest.fixture(scope="module")
def trained(folders: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    args = ["train", "--data", str(folders[0]), "--val", str(folders[1]), "--out", str(out), "--steps", "30", *TINY]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out


def _losses(log: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in log.read_text().splitlines()]


def test_loss_falls(folders: tuple[Path, Path], tmp_path: Path) -> None:
    options = TrainOptions(
        data=folders[0],
        out=tmp_path / "m.safetensors",
        steps=150,
        channels=8,
        bottleneck=8,
        levels=2,
        crop=32,
        batch=4,
        lambdas=(0.01,),
        log_every=10,
        device="cpu",
        progress=False,
        lr=1e-3,
    )
    train(options)
    losses = _losses(options.log_path)
    assert len(losses) == 15
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3
    card = json.loads(options.out.with_name(options.out.name + ".json").read_text())
    # Gains learn at 10x the base rate: in 150 steps they leave their initial ramp.
    assert card["diagnosis"]["gains"][0]["log_gain_moved"] > 0.05


def test_mixed_quality_batches_are_balanced_and_sorted() -> None:
    import torch

    from aezip.train.trainer import mixed_qualities

    gen = torch.Generator().manual_seed(0)
    assert mixed_qualities(16, 8, gen).tolist() == [q for q in range(8) for _ in range(2)]
    odd = mixed_qualities(11, 8, gen)
    assert odd.tolist() == sorted(odd.tolist()) and set(range(8)) <= set(odd.tolist())


def test_card_records_the_run(trained: Path) -> None:
    card = json.loads(trained.with_name(trained.name + ".json").read_text())
    assert card["steps"] == 30 and card["cumulative_steps"] == 30
    assert card["architecture"]["channels"] == 8 and len(card["lambdas"]) == 8
    assert card["device"].startswith("cpu") and card["command"].startswith("aezip train")
    assert [row["quality"] for row in card["validation"]] == list(range(1, 9))
    assert all(row["bpp_ans"] > 0 and row["psnr"] > 0 for row in card["validation"])
    assert {row["source"] for row in card["entropy_tables"]} <= {"prior", "histogram"}
    ceiling = card["diagnosis"]["ceiling_psnr"]
    assert set(ceiling) == {"quality_1_gains", "quality_8_gains"} and all(v > 0 for v in ceiling.values())
    assert [g["quality"] for g in card["diagnosis"]["gains"]] == list(range(1, 9))
    from aezip.model.weights import load_model

    assert card["sha256"] == load_model(trained).sha256


def test_trained_model_round_trips_through_pack(trained: Path, folders: tuple[Path, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    arc = tmp_path / "v.aez"
    pack = ["pack", str(folders[1]), str(arc), "--model", str(trained), "--no-embed-model"]
    assert runner.invoke(main, pack).exit_code == 0
    missing = runner.invoke(main, ["unpack", str(arc), str(tmp_path / "no")])
    assert missing.exit_code == 1 and "--model" in missing.output
    result = runner.invoke(main, ["unpack", str(arc), str(tmp_path / "out"), "--model", str(trained)])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out" / "0.png").size == (64, 48)
    embedded = tmp_path / "e.aez"
    assert runner.invoke(main, ["pack", str(folders[1]), str(embedded), "--model", str(trained)]).exit_code == 0
    anywhere = runner.invoke(main, ["unpack", str(embedded), str(tmp_path / "e")])
    assert anywhere.exit_code == 0, anywhere.output


def test_resume_continues_the_same_run(folders: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "r.safetensors"
    base = ["train", "--data", str(folders[0]), "--out", str(out), *TINY]
    runner = CliRunner()
    assert runner.invoke(main, [*base, "--steps", "10"]).exit_code == 0
    assert runner.invoke(main, [*base, "--steps", "16", "--resume"]).exit_code == 0
    card = json.loads(out.with_name(out.name + ".json").read_text())
    assert card["steps"] == 16
    steps = [json.loads(line)["step"] for line in out.with_name(out.name + ".log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 16


def test_init_carries_cumulative_steps(trained: Path, folders: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "ft.safetensors"
    args = ["train", "--data", str(folders[0]), "--out", str(out), "--init", str(trained), "--steps", "5", *TINY]
    assert CliRunner().invoke(main, args).exit_code == 0
    card = json.loads(out.with_name(out.name + ".json").read_text())
    assert card["steps"] == 5 and card["cumulative_steps"] == 35 and len(card["history"]) == 2


def test_resume_without_checkpoint_is_an_error(folders: tuple[Path, Path], tmp_path: Path) -> None:
    args = ["train", "--data", str(folders[0]), "--out", str(tmp_path / "x.safetensors"), "--resume", *TINY]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "no checkpoint" in result.output


def test_init_with_a_new_ladder_keeps_the_transforms(trained: Path, folders: tuple[Path, Path], tmp_path: Path) -> None:
    import torch

    from aezip.model.weights import load_model
    from aezip.train.reladder import reladder

    old = load_model(trained).net
    ladder = (0.0005, *old.config.lambdas[1:])
    moved = reladder(old, ladder)
    assert moved.config.lambdas == ladder and moved.config.channels == old.config.channels
    for (name, a), b in zip(old.state_dict().items(), moved.state_dict().values(), strict=True):
        if not name.startswith(("log_gain", "log_inv_gain", "priors.0.")):
            assert torch.equal(a, b), name
    # Rungs the old ladder already had keep their gains; the new lowest rung extends the first
    # segment, so its gains lie beyond quality 1's on the same per-channel line.
    assert torch.allclose(moved.log_gain[1:], old.log_gain[1:])
    l0, l1 = old.config.lambdas[:2]
    expected = old.log_gain[0] - (old.log_gain[1] - old.log_gain[0]) * math.log(l0 / 0.0005) / math.log(l1 / l0)
    assert torch.allclose(moved.log_gain[0], expected, atol=1e-5)
    assert torch.equal(moved.priors[0].state_dict()["matrices.0"], old.priors[0].state_dict()["matrices.0"])

    out = tmp_path / "re.safetensors"
    lambdas = ",".join(str(v) for v in ladder)
    args = ["train", "--data", str(folders[0]), "--out", str(out), "--init", str(trained), "--steps", "3", *TINY]
    result = CliRunner().invoke(main, [*args, "--lambdas", lambdas])
    assert result.exit_code == 0, result.output
    card = json.loads(out.with_name(out.name + ".json").read_text())
    assert card["lambdas"] == list(ladder) and card["cumulative_steps"] == 33
