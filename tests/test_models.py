"""Shipped models: every former default stays loadable, archives of old releases still decode."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import aezip
from aezip.codec.codec import Codec
from aezip.errors import ModelError
from aezip.model import registry
from aezip.model.registry import default_model, model_name, shipped_models

GOLDEN = Path(__file__).parent / "data" / "golden-v1"
GOLDEN_V2 = Path(__file__).parent / "data" / "golden-v2"
# sha256 of the golden archives' latents (int32, little-endian) as their releases decoded them.
V1_LATENTS = "3118f3b4b9c2405484d055fa2a85f6fd052b4214e48ba833262de1e32841b405"
V2_LATENTS = "21bb35e965686f3353e95dd43d2ec2bcf1797b9220cf34277bc131a95785e8c6"


def test_catalog_lists_every_former_default_with_a_matching_hash() -> None:
    models = shipped_models()
    assert [m.name for m in models][:2] == ["v1-cpu-64x96", "v2-gpu-128x320"]
    releases = [r for m in models for r in m.default_in]
    assert "0.1.0" in releases and aezip.__version__ in releases
    for m in models:
        assert hashlib.sha256(m.path.read_bytes()).hexdigest() == m.sha256
    assert default_model().name in {m.name for m in models}


def test_default_model_is_named() -> None:
    codec = Codec(quality=1)
    assert codec.model.name == default_model().name
    assert model_name(codec.model.model_id) == default_model().name
    assert model_name(b"\0" * 16) is None


@pytest.mark.parametrize(
    ("folder", "release", "model_name", "quality", "entropy", "latents_sha256", "min_psnr"),
    [
        # Written by aezip 0.1.0: model v1-cpu-64x96, quality 4, ANS (method 2).
        (GOLDEN, "0.1.0", "v1-cpu-64x96", 4, 2, V1_LATENTS, 24),
        # Written by aezip 0.2.0: model v2-gpu-128x320, quality 6, --entropy auto → ans-ctx (method 3).
        (GOLDEN_V2, "0.2.0", "v2-gpu-128x320", 6, 3, V2_LATENTS, 30),
    ],
    ids=["0.1.0", "0.2.0"],
)
def test_archive_written_by_an_old_release_decodes_exactly(
    folder: Path, release: str, model_name: str, quality: int, entropy: int, latents_sha256: str, min_psnr: float
) -> None:
    """``FOLDER/archive.aez`` holds ``original.png`` (as photos/monarch-crop.png) and ``labels.csv``."""
    with aezip.open(folder / "archive.aez") as archive:
        assert archive.read_bytes("labels.csv") == (folder / "labels.csv").read_bytes()
        image = np.asarray(archive.image("photos/monarch-crop.png"))
        header, model, latents, _ = archive.codec._parse(archive.payload("photos/monarch-crop.png"))
    assert model.name == model_name and header.quality == quality and header.entropy == entropy
    assert hashlib.sha256(latents.astype("<i4").tobytes()).hexdigest() == latents_sha256
    then = np.asarray(Image.open(folder / f"decoded-by-{release}.png"))
    assert np.abs(image.astype(int) - then.astype(int)).max() <= 2
    original = np.asarray(Image.open(folder / "original.png").convert("RGB")).astype(float)
    assert 10 * np.log10(255**2 / np.mean((image - original) ** 2)) > min_psnr


def test_old_archive_unpacks_through_the_cli(runner, tmp_path: Path) -> None:
    from aezip.cli.app import main

    result = runner.invoke(main, ["unpack", str(GOLDEN / "archive.aez"), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "labels.csv").read_bytes() == (GOLDEN / "labels.csv").read_bytes()


def test_damaged_shipped_model_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = shipped_models()[0]
    copy = tmp_path / entry.file
    shutil.copy(entry.path, copy)
    data = bytearray(copy.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(registry, "_weights_dir", lambda: tmp_path)
    with pytest.raises(ModelError, match="damaged"):
        registry.load_shipped(entry)
