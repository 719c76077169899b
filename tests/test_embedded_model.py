"""An archive packed with a model aezip does not ship carries it, so it decodes anywhere."""

from __future__ import annotations

import hashlib
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
from aezip.model.registry import shipped_models
from aezip.model.weights import model_to_bytes
from tests.conftest import photo_like


@pytest.fixture(scope="module")
def custom_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained model with tables tabulated from its priors (enough to code and decode)."""
    import torch

    torch.manual_seed(0)
    net = Autoencoder(ModelConfig(levels=2, channels=8, bottleneck=8)).eval()
    tables = [CdfTables.from_pmf(p.pmf(-64, 64).numpy(), -64) for p in net.priors]
    path = tmp_path_factory.mktemp("model") / "custom.safetensors"
    path.write_bytes(model_to_bytes(net, tables, half=True))
    return path


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    Image.fromarray(photo_like(40, 56, seed=3)).save(folder / "a.png")
    (folder / "notes.txt").write_text("hello\n")
    return folder


def _pack(src: Path, out: Path, model: Path, *extra: str) -> None:
    result = CliRunner().invoke(main, ["pack", str(src), str(out), "--model", str(model), *extra])
    assert result.exit_code == 0, result.output


def test_custom_model_travels_inside_the_archive(src: Path, custom_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.aez"
    _pack(src, out, custom_model)
    with ArchiveReader(out) as reader:
        models = [m for m in reader.members if m.kind == MemberKind.MODEL]
        assert reader.version == (1, 2)
        assert [m.name for m in models] == [hashlib.sha256(custom_model.read_bytes()).hexdigest()]
    custom_model.rename(custom_model.with_suffix(".gone"))
    try:
        runner = CliRunner()
        result = runner.invoke(main, ["unpack", str(out), str(tmp_path / "dest")])
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["a.png", "notes.txt"]
        listing = runner.invoke(main, ["list", str(out)]).output
        assert "model" in listing
        info = runner.invoke(main, ["info", str(out)]).output
        assert "embedded in the archive" in info and "1 embedded model" in info
        with aezip.open(out) as archive:
            assert archive.names == ["a.png", "notes.txt"] and len(archive) == 2
            assert np.asarray(archive.image("a.png")).shape == (40, 56, 3)
        assert runner.invoke(main, ["verify", str(out)]).exit_code == 0
    finally:
        custom_model.with_suffix(".gone").rename(custom_model)


def test_no_embed_model_needs_the_file_to_decode(src: Path, custom_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.aez"
    _pack(src, out, custom_model, "--no-embed-model")
    with ArchiveReader(out) as reader:
        assert reader.version == (1, 0)
        assert all(m.kind != MemberKind.MODEL for m in reader.members)
    runner = CliRunner()
    result = runner.invoke(main, ["unpack", str(out), str(tmp_path / "dest")])
    assert result.exit_code == 1 and "--model" in result.output
    ok = runner.invoke(main, ["unpack", str(out), str(tmp_path / "dest2"), "--model", str(custom_model)])
    assert ok.exit_code == 0, ok.output


def test_shipped_models_are_never_embedded(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.aez"
    _pack(src, out, shipped_models()[0].path)
    with ArchiveReader(out) as reader:
        assert all(m.kind != MemberKind.MODEL for m in reader.members)


def test_a_tampered_embedded_model_is_refused(src: Path, custom_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "a.aez"
    _pack(src, out, custom_model)
    with ArchiveReader(out) as reader:
        model = next(m for m in reader.members if m.kind == MemberKind.MODEL)
    data = bytearray(out.read_bytes())
    data[model.offset + model.length // 2] ^= 0x40
    out.write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["unpack", str(out), str(tmp_path / "dest")])
    assert result.exit_code == 1 and result.output.startswith("Error:") and len(result.output.splitlines()) == 1
    assert not (tmp_path / "dest").exists()
