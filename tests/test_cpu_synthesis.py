"""The NumPy synthesis transform (aezip.model.cpu_synthesis) equals the PyTorch one up to float rounding."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from aezip.errors import ModelError
from aezip.model import cpu_synthesis as cs
from aezip.model.autoencoder import Autoencoder
from aezip.model.config import ModelConfig
from aezip.model.layers import GDN
from tests.conftest import photo_like, psnr


def _conv_params(c_in: int, c_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (Cin, Cout, 5, 5) weight and (Cout,) bias, float32, outputs of order 1 for inputs of order 1."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(0.0, 1.0 / np.sqrt(9 * c_in), (c_in, c_out, 5, 5)).astype(np.float32)
    bias = rng.normal(0.0, 0.5, c_out).astype(np.float32)
    return weight, bias


def _input(h: int, w: int, c: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 1).normal(0.0, 1.0, (h, w, c)).astype(np.float32)


def _reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, gdn: GDN | None = None) -> np.ndarray:
    """conv_transpose2d (and optionally a torch GDN) on a channels-last array, result channels last."""
    with torch.no_grad():
        xt = torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0)
        y = F.conv_transpose2d(
            xt, torch.from_numpy(weight), torch.from_numpy(bias), stride=2, padding=2, output_padding=1
        )
        if gdn is not None:
            y = gdn(y)
        return y[0].permute(1, 2, 0).numpy()


def _assert_close(got: np.ndarray, ref: np.ndarray, tol: float = 1e-4) -> None:
    assert got.dtype == np.float32
    assert got.shape == ref.shape
    scale = max(1.0, float(np.abs(ref).max()))
    err = float(np.abs(got.astype(np.float64) - ref).max())
    assert err <= tol * scale, f"max error {err} at scale {scale}"


def _random_igdn(c: int, seed: int) -> tuple[cs.InverseGDN, GDN]:
    """An InverseGDN and a torch inverse GDN holding the same random, non-diagonal parameters."""
    rng = np.random.default_rng(seed + 2)
    beta_root = rng.uniform(0.5, 1.5, c).astype(np.float32)
    gamma_root = rng.uniform(-0.6, 0.6, (c, c)).astype(np.float32)  # roots: the sign must not matter
    gdn = GDN(c, inverse=True)
    with torch.no_grad():
        gdn.beta_root.copy_(torch.from_numpy(beta_root))
        gdn.gamma_root.copy_(torch.from_numpy(gamma_root))
    return cs.InverseGDN(beta_root, gamma_root), gdn


# --- WinogradUp / SubpixelUp against conv_transpose2d -------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    c_in=st.integers(1, 8),
    c_out=st.integers(1, 6),
    chunk_tiles=st.sampled_from([1, 2, 4, 512]),
    with_igdn=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_winograd_matches_conv_transpose(
    h: int, w: int, c_in: int, c_out: int, chunk_tiles: int, with_igdn: bool, seed: int
) -> None:
    """WinogradUp = conv_transpose2d (followed, with an inverse GDN, by torch's GDN)."""
    weight, bias = _conv_params(c_in, c_out, seed)
    igdn, gdn = _random_igdn(c_out, seed) if with_igdn else (None, None)
    x = _input(h, w, c_in, seed)
    with mock.patch.object(cs, "CHUNK_TILES", chunk_tiles):
        got = cs.WinogradUp(weight, bias, igdn)(x)
    _assert_close(got, _reference(x, weight, bias, gdn))


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    c_in=st.integers(1, 8),
    c_out=st.integers(1, 8),
    rows=st.sampled_from([1, 3, 16]),
    seed=st.integers(0, 2**16),
)
def test_subpixel_matches_conv_transpose(h: int, w: int, c_in: int, c_out: int, rows: int, seed: int) -> None:
    weight, bias = _conv_params(c_in, c_out, seed)
    x = _input(h, w, c_in, seed)
    with mock.patch.object(cs.SubpixelUp, "ROWS", rows):
        got = cs.SubpixelUp(weight, bias)(x)
    _assert_close(got, _reference(x, weight, bias))


@pytest.mark.parametrize(
    ("h", "w", "chunk_tiles"),
    [
        (1, 1, 512),
        (6, 6, 512),  # exactly one full tile
        (12, 18, 512),  # whole tiles only
        (7, 13, 512),  # partial last tile row and column
        (40, 20, 4),  # 7 tile rows × 4 tile columns, one tile row per chunk, partial last column
        (41, 20, 8),  # two tile rows per chunk, the last chunk shorter
        (5, 45, 4),  # more tile columns than CHUNK_TILES: one tile row per chunk anyway
        (140, 140, 512),  # 24 × 24 tiles with the real CHUNK_TILES: two chunks
    ],
)
def test_winograd_fixed_sizes(monkeypatch: pytest.MonkeyPatch, h: int, w: int, chunk_tiles: int) -> None:
    monkeypatch.setattr(cs, "CHUNK_TILES", chunk_tiles)
    weight, bias = _conv_params(3, 4, h * 1000 + w)
    x = _input(h, w, 3, h + w)
    _assert_close(cs.WinogradUp(weight, bias)(x), _reference(x, weight, bias))


@pytest.mark.parametrize(("h", "w", "rows"), [(1, 1, 16), (40, 7, 16), (33, 5, 16), (17, 9, 4), (2, 30, 1)])
def test_subpixel_fixed_sizes(monkeypatch: pytest.MonkeyPatch, h: int, w: int, rows: int) -> None:
    monkeypatch.setattr(cs.SubpixelUp, "ROWS", rows)
    weight, bias = _conv_params(8, 3, h * 1000 + w)
    x = _input(h, w, 8, h + w)
    _assert_close(cs.SubpixelUp(weight, bias)(x), _reference(x, weight, bias))


def test_wrong_input_channels_rejected() -> None:
    weight, bias = _conv_params(4, 3, 0)
    x = _input(5, 5, 3, 0)
    with pytest.raises(ValueError):
        cs.WinogradUp(weight, bias)(x)
    with pytest.raises(ValueError):
        cs.SubpixelUp(weight, bias)(x)


# --- WinogradUp followed by the inverse GDN -----------------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(1, 1), (13, 8), (40, 20)])
def test_winograd_with_igdn_fixed_sizes(monkeypatch: pytest.MonkeyPatch, h: int, w: int) -> None:
    monkeypatch.setattr(cs, "CHUNK_TILES", 4)
    weight, bias = _conv_params(8, 8, 7)
    igdn, gdn = _random_igdn(8, 7)
    x = _input(h, w, 8, 7)
    _assert_close(cs.WinogradUp(weight, bias, igdn)(x), _reference(x, weight, bias, gdn))


def test_inverse_gdn_apply_in_place() -> None:
    igdn, gdn = _random_igdn(5, 3)
    x = _input(4, 6, 5, 3)
    with torch.no_grad():
        ref = gdn(torch.from_numpy(x).permute(2, 0, 1).unsqueeze(0))[0].permute(1, 2, 0).numpy()
    rows = x.reshape(-1, 5).copy()
    scratch = np.full(2 * rows.size + 7, np.nan, dtype=np.float32)
    igdn.apply_(rows, scratch)
    _assert_close(rows.reshape(x.shape), ref, 1e-5)


# --- The whole synthesis transform --------------------------------------------------------------


@pytest.fixture(scope="module")
def small_model() -> Autoencoder:
    torch.manual_seed(0)
    model = Autoencoder(ModelConfig(levels=4, channels=8, bottleneck=6, lambdas=(0.002, 0.01, 0.05)))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith("synthesis.") and name.endswith("beta_root"):
                param.copy_(torch.rand(param.shape, generator=gen) + 0.5)
            elif name.startswith("synthesis.") and name.endswith("gamma_root"):
                param.copy_((torch.rand(param.shape, generator=gen) - 0.5) * 0.6)
            elif name.startswith("synthesis.") and name.endswith("weight"):  # outputs of order 1, not 0.1
                param.copy_(torch.randn(param.shape, generator=gen) / (4 * param.shape[0] ** 0.5))
            elif name == "log_inv_gain":
                param.copy_((torch.rand(param.shape, generator=gen) - 0.5) * 1.5)
    return model.eval()


def _numpy_weights(model: Autoencoder) -> dict[str, np.ndarray]:
    return {name: t.detach().numpy().copy() for name, t in model.state_dict().items()}


@pytest.mark.parametrize(("h", "w"), [(1, 1), (3, 5), (4, 2)])
@pytest.mark.parametrize("quality", [0, 2])
def test_cpu_synthesis_matches_autoencoder(small_model: Autoencoder, h: int, w: int, quality: int) -> None:
    rng = np.random.default_rng(h * 10 + w + quality)
    latents = rng.integers(-4, 5, (6, h, w)).astype(np.int8)
    synthesis = cs.CpuSynthesis(_numpy_weights(small_model), levels=4)
    got = synthesis(latents, quality)
    with torch.no_grad():
        ref = small_model.synthesize(torch.from_numpy(latents).unsqueeze(0), quality)[0].permute(1, 2, 0).numpy()
    assert got.shape == (16 * h, 16 * w, 3)
    _assert_close(got, ref)


def test_cpu_synthesis_qualities_differ(small_model: Autoencoder) -> None:
    latents = np.random.default_rng(5).integers(-4, 5, (6, 2, 3)).astype(np.int8)
    synthesis = cs.CpuSynthesis(_numpy_weights(small_model), levels=4)
    assert not np.allclose(synthesis(latents, 0), synthesis(latents, 1), atol=1e-3)


def test_cpu_synthesis_stage_kinds(small_model: Autoencoder) -> None:
    stages = cs.CpuSynthesis(_numpy_weights(small_model), levels=4).stages
    assert [type(s) for s in stages] == [cs.WinogradUp] * 3 + [cs.SubpixelUp]
    assert all(s.igdn is not None for s in stages[:3])


# --- Bad weights --------------------------------------------------------------------------------


def _broken(model: Autoencoder, **changes: np.ndarray | None) -> dict[str, np.ndarray]:
    weights = _numpy_weights(model)
    for key, value in changes.items():
        name = key.replace("__", ".")
        if value is None:
            del weights[name]
        else:
            weights[name] = value
    return weights


def _f32(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).normal(0.0, 0.1, shape).astype(np.float32)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"log_inv_gain": None}, id="missing-gain"),
        pytest.param({"synthesis__0__weight": None}, id="missing-first-weight"),
        pytest.param({"synthesis__4__bias": None}, id="missing-bias"),
        pytest.param({"synthesis__3__gamma_root": None}, id="missing-gamma"),
        pytest.param({"synthesis__6__weight": None}, id="missing-last-weight"),
        pytest.param({"synthesis__0__weight": _f32(5, 8, 5, 5)}, id="first-input-channels"),
        pytest.param({"synthesis__2__weight": _f32(7, 8, 5, 5)}, id="middle-input-channels"),
        pytest.param({"synthesis__6__weight": _f32(7, 3, 5, 5)}, id="last-input-channels"),
        pytest.param({"synthesis__6__weight": _f32(8, 4, 5, 5), "synthesis__6__bias": _f32(4)}, id="last-4-outputs"),
        pytest.param({"synthesis__6__weight": _f32(8, 1, 5, 5), "synthesis__6__bias": _f32(1)}, id="last-1-output"),
        pytest.param({"synthesis__2__weight": _f32(8, 8, 5)}, id="weight-3d"),
        pytest.param({"synthesis__2__weight": _f32(8, 8, 3, 3)}, id="weight-3x3"),
        pytest.param({"synthesis__2__bias": _f32(7)}, id="bias-width"),
        pytest.param({"synthesis__6__bias": _f32(4)}, id="last-bias-width"),
        pytest.param({"synthesis__1__beta_root": _f32(7), "synthesis__1__gamma_root": _f32(7, 7)}, id="gdn-width"),
        pytest.param({"synthesis__3__gamma_root": _f32(8, 7)}, id="gdn-gamma-not-square"),
        pytest.param({"synthesis__5__beta_root": _f32(8, 1)}, id="gdn-beta-2d"),
        pytest.param({"log_inv_gain": _f32(6)}, id="gain-1d"),
        pytest.param({"log_inv_gain": _f32(3, 5)}, id="gain-width"),
    ],
)
def test_bad_weights_raise_model_error(small_model: Autoencoder, changes: dict[str, np.ndarray | None]) -> None:
    with pytest.raises(ModelError):
        cs.CpuSynthesis(_broken(small_model, **changes), levels=4)


@pytest.mark.parametrize("shape", [(2, 3, 3, 3), (2, 3, 5, 4), (2, 3, 25), (2, 3, 5, 5, 1)])
def test_merged_kernel_rejects_non_5x5(shape: tuple[int, ...]) -> None:
    with pytest.raises(ModelError):
        cs.merged_kernel(np.zeros(shape, dtype=np.float32))


def test_merged_kernel_taps() -> None:
    """Each of the 25 taps lands exactly once among the 4 phases × 9 sub-kernel taps."""
    weight = np.arange(2 * 3 * 25, dtype=np.float32).reshape(2, 3, 5, 5) + 1
    merged = cs.merged_kernel(weight)
    assert merged.shape == (12, 2, 3, 3)
    assert merged.dtype == np.float64
    nonzero = merged[merged != 0]
    assert sorted(nonzero.tolist()) == sorted(weight.ravel().tolist())


# --- Winograd matrices --------------------------------------------------------------------------


@pytest.mark.parametrize("m", [2, 4, 6])
def test_winograd_matrices_compute_correlation(m: int) -> None:
    at, g, bt = cs.winograd_matrices(m)
    assert at.shape == (m, m + 2) and g.shape == (m + 2, 3) and bt.shape == (m + 2, m + 2)
    rng = np.random.default_rng(m)
    for _ in range(5):
        k, d = rng.normal(size=3), rng.normal(size=m + 2)
        expect = np.array([np.dot(k, d[i : i + 3]) for i in range(m)])
        np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), expect, rtol=0, atol=1e-9)


@pytest.mark.parametrize("m", [0, 1, 3, 5, 8])
def test_winograd_matrices_reject_other_sizes(m: int) -> None:
    with pytest.raises(ValueError):
        cs.winograd_matrices(m)


def test_cpu_unpack_runs_without_torch(tmp_path: Path) -> None:
    """``aezip unpack`` on a CPU decodes with NumPy only: torch is never imported, and the pixels are
    the ones this process decodes (where torch is loaded) and close to the original."""
    from PIL import Image

    from aezip.cli.app import main as cli
    from aezip.store.sharded import open_archive

    src = tmp_path / "src"
    src.mkdir()
    original = photo_like(70, 90, 3)
    Image.fromarray(original).save(src / "a.png")
    archive = tmp_path / "a.aez"
    assert CliRunner().invoke(cli, ["pack", str(src), str(archive), "--device", "cpu"]).exit_code == 0
    script = (
        "import sys; from aezip.cli.app import main; "
        f"main(['unpack', {str(archive)!r}, {str(tmp_path / 'out')!r}], standalone_mode=False); "
        "sys.exit(3 if 'torch' in sys.modules else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr or "torch was imported"
    restored = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    with open_archive(archive) as reader:
        here = np.asarray(reader.codec.decode(reader.payload("a.png")))
    assert np.array_equal(restored, here)
    assert psnr(restored, original) > 25
