"""Codec API: one image ⇄ bytes with the shipped model."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from aezip import Codec, CorruptArchiveError, FormatError, ModelMismatchError, UnsupportedImageError
from aezip.codec.codec import parse_header
from tests.conftest import photo_like, psnr

PSNR_FLOOR = 32.0  # dB at quality 8 on a smooth synthetic photo (shipped model: ~39.6)


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec(quality=8, device="cpu")


def test_rgb_round_trip_keeps_size_and_quality(codec: Codec) -> None:
    img = photo_like(40, 56)
    out = codec.decode(codec.encode(Image.fromarray(img)))
    assert out.mode == "RGB" and out.size == (56, 40)
    assert psnr(img, np.asarray(out)) > PSNR_FLOOR


def test_entropy_methods_decode_to_identical_pixels() -> None:
    img = photo_like(48, 32, seed=3)
    ans = Codec(quality=5, entropy="ans", device="cpu")
    zstd = Codec(quality=5, entropy="zstd", device="cpu")
    a, z = ans.encode(img), zstd.encode(img)
    assert parse_header(a)[0].entropy != parse_header(z)[0].entropy
    assert np.array_equal(np.asarray(ans.decode(a)), np.asarray(zstd.decode(z)))
    assert np.array_equal(np.asarray(ans.decode(z)), np.asarray(zstd.decode(z)))


def test_auto_keeps_the_shorter_stream() -> None:
    img = photo_like(64, 48, seed=7)
    methods = ("ans", "zstd", "ans-ctx", "auto")
    sizes = {m: len(Codec(quality=3, entropy=m, device="cpu").encode(img)) for m in methods}
    assert sizes["auto"] == min(sizes["ans"], sizes["zstd"], sizes["ans-ctx"])


def test_auto_still_finds_zstd_when_it_wins() -> None:
    """Auto estimates zstd cheaply before coding it at level 19; repetitive latents must still get zstd."""
    block = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    img = np.tile(block, (8, 8, 1))  # one latent column repeated: zstd's matches beat any per-symbol coder
    streams = {m: Codec(quality=3, entropy=m, device="cpu").encode(img) for m in ("zstd", "ans-ctx", "auto")}
    assert len(streams["zstd"]) * 4 < len(streams["ans-ctx"])
    assert streams["auto"] == streams["zstd"]


def test_higher_quality_costs_more_bytes_and_gives_better_pixels() -> None:
    img = photo_like(64, 64, seed=5)
    low, high = Codec(quality=1, device="cpu"), Codec(quality=8, device="cpu")
    a, b = low.encode(img), high.encode(img)
    assert len(a) < len(b)
    assert psnr(img, np.asarray(low.decode(a))) < psnr(img, np.asarray(high.decode(b)))


@given(height=st.integers(1, 40), width=st.integers(1, 40))
def test_any_size_round_trips(height: int, width: int) -> None:
    codec = Codec(quality=4, device="cpu")
    img = photo_like(height, width, seed=height * 100 + width)
    out = codec.decode(codec.encode(img))
    assert out.size == (width, height)


def test_grayscale_comes_back_grayscale(codec: Codec) -> None:
    gray = photo_like(24, 30)[..., 0]
    out = codec.decode(codec.encode(Image.fromarray(gray, "L")))
    assert out.mode == "L" and out.size == (30, 24)
    assert psnr(gray, np.asarray(out)) > PSNR_FLOOR


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_lossless(codec: Codec, mode: str) -> None:
    rgb = photo_like(20, 28)
    alpha = np.random.default_rng(1).integers(0, 256, (20, 28), dtype=np.uint8)
    im = Image.fromarray(rgb).convert(mode[:-1])
    im.putalpha(Image.fromarray(alpha, "L"))
    out = codec.decode(codec.encode(im))
    assert out.mode == mode
    assert np.array_equal(np.asarray(out.getchannel("A")), alpha)


def test_numpy_and_tensor_inputs_match_pil(codec: Codec) -> None:
    img = photo_like(16, 16)
    from_pil = codec.encode(Image.fromarray(img))
    assert codec.encode(img) == from_pil
    assert codec.encode(torch.from_numpy(img).permute(2, 0, 1)) == from_pil
    assert codec.encode(torch.from_numpy(img).permute(2, 0, 1).float() / 255) == from_pil


def test_icc_profile_is_kept(codec: Codec) -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    im = Image.fromarray(photo_like(16, 16))
    im.info["icc_profile"] = icc
    assert codec.decode(codec.encode(im)).info["icc_profile"] == icc


def test_exif_orientation_is_applied(codec: Codec) -> None:
    im = Image.fromarray(photo_like(10, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buf = io.BytesIO()
    im.save(buf, "PNG", exif=exif.tobytes())
    shown = Image.open(io.BytesIO(buf.getvalue()))
    from aezip.codec.imagefile import prepare

    prepared = prepare(shown)
    assert prepared.rgb.shape[:2] == (30, 10)


@pytest.mark.parametrize(
    "image",
    [Image.new("P", (8, 8)), Image.new("I;16", (8, 8)), np.zeros((4, 4, 3), np.float32), "not an image"],
)
def test_uncodable_inputs_are_refused(codec: Codec, image: object) -> None:
    with pytest.raises(UnsupportedImageError):
        codec.encode(image)


def test_truncated_or_foreign_streams_raise_format_errors(codec: Codec) -> None:
    data = codec.encode(photo_like(20, 20))
    for cut in range(0, len(data), max(1, len(data) // 40)):
        with pytest.raises(FormatError):
            codec.decode(data[:cut])
    with pytest.raises(FormatError):
        codec.decode(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(CorruptArchiveError):
        codec.decode(data + b"\0")


def test_header_bit_flips_never_crash(codec: Codec) -> None:
    data = bytearray(codec.encode(photo_like(20, 20)))
    for bit in range(8 * 42):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            codec.decode(bytes(flipped))
        except (FormatError, ModelMismatchError):
            pass


def test_unknown_model_is_refused_with_its_id(codec: Codec) -> None:
    data = bytearray(codec.encode(photo_like(20, 20)))
    data[8:24] = bytes(range(16))
    with pytest.raises(ModelMismatchError, match=bytes(range(16)).hex()):
        codec.decode(bytes(data))


def test_quality_and_entropy_are_checked() -> None:
    from aezip import AezipError

    with pytest.raises(AezipError):
        Codec(quality=9)
    with pytest.raises(AezipError):
        Codec(entropy="lzma")


def test_stream_header_matches_the_spec() -> None:
    """docs/FORMAT.md, "Image stream, version 1": fields at their documented offsets."""
    import struct

    codec = Codec(quality=8, entropy="ans", device="cpu")
    im = Image.fromarray(photo_like(20, 37)).convert("LA")
    data = codec.encode(im)
    assert data[:4] == b"\x89AEI" and data[4] == 1 and data[5] == 2 and data[6] == 8
    assert data[7] == 0b011  # grayscale + alpha
    assert data[8:24] == codec.model.model_id
    w, h, c, lh, lw, n = struct.unpack_from("<IIHHHI", data, 24)
    stride = codec.model.config.stride
    assert (w, h, c, lh, lw) == (37, 20, codec.model.config.bottleneck, -(-20 // stride), -(-37 // stride))
    (alpha_len,) = struct.unpack_from("<I", data, 42 + n)
    assert 42 + n + 4 + alpha_len == len(data)


def test_huge_declared_image_is_refused_before_decoding(codec: Codec) -> None:
    import struct

    data = bytearray(codec.encode(photo_like(20, 20)))
    struct.pack_into("<IIHHHI", data, 24, 60_000, 60_000, 96, 3750, 3750, 0)
    with pytest.raises(CorruptArchiveError, match="more than aezip ever codes"):
        codec.decode(bytes(data))
