"""Hostile archives and manifests (issue 30, section 2): what a member needs travels with it, and
every reader refuses the same malformed input with a one-line aezip error."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import aezip
from aezip.archive.container import ArchiveReader, MemberKind
from aezip.cli.app import main
from aezip.entropy.tables import CdfTables
from aezip.model.autoencoder import Autoencoder
from aezip.model.config import ModelConfig
from aezip.model.side_files import side_file_path
from aezip.model.weights import model_to_bytes
from aezip.train.fit_entropy import main as fit_main
from tests.conftest import photo_like


@pytest.fixture(scope="module")
def ctx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained model with its ``ans-ctx`` side file beside it, as ``aezip.train.fit_entropy`` leaves it."""
    import torch

    root = tmp_path_factory.mktemp("ctxmodel")
    torch.manual_seed(0)
    net = Autoencoder(ModelConfig(levels=2, channels=8, bottleneck=6, lambdas=(0.01, 0.05)))
    with torch.no_grad():
        net.log_gain.add_(2.0)
        tables = [CdfTables.from_pmf(net.priors[q].pmf(-64, 64).numpy(), -64) for q in range(2)]
    path = root / "my.safetensors"
    path.write_bytes(model_to_bytes(net, tables))
    (root / "train").mkdir()
    for i in range(2):
        Image.fromarray(photo_like(32, 40, seed=i)).save(root / "train" / f"{i}.png")
    assert fit_main([str(path), str(root / "train")]) == side_file_path(path)
    return path


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_ans_ctx_archive_carries_its_context_tables(ctx_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(photo_like(40, 48, seed=5)).save(src / "a.png")
    (src / "b.txt").write_text("data\n")
    out = tmp_path / "a.aez"
    code, text = _invoke("pack", src, out, "--model", ctx_model, "--entropy", "ans-ctx", "--quality", "2")
    assert code == 0, text
    with ArchiveReader(out) as reader:
        assert reader.version == (1, 3)
        kinds = sorted(m.kind for m in reader.members if m.kind in (MemberKind.MODEL, MemberKind.CONTEXT))
        assert kinds == [MemberKind.MODEL, MemberKind.CONTEXT]
    with aezip.open(out, models=[ctx_model]) as archive:
        expected = np.asarray(archive.image("a.png"))
        assert archive.names == ["a.png", "b.txt"]
    away = tmp_path / "away"
    away.mkdir()
    for f in (ctx_model, side_file_path(ctx_model)):
        shutil.move(f, away / f.name)
    try:
        assert _invoke("verify", out)[0] == 0
        code, text = _invoke("unpack", out, tmp_path / "dest")
        assert code == 0, text
        assert np.array_equal(np.asarray(Image.open(tmp_path / "dest" / "a.png")), expected)
        with aezip.open(out) as archive:
            assert np.array_equal(np.asarray(archive.image("a.png")), expected)
        code, text = _invoke("list", out)
        assert code == 0 and "a.png" in text
    finally:
        for f in (ctx_model, side_file_path(ctx_model)):
            shutil.move(away / f.name, f)
