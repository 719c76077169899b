"""What pack does with each kind of input: deep images kept exact, damaged ones found before encoding,
the reason each raw member was stored as it is, and shard counts (issue 29, items 1, 7, 10 and "why raw")."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import aezip
from aezip.cli.app import main
from tests.conftest import photo_like

H, W = 24, 32


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bytes(samples: np.ndarray, color_type: int, depth: int = 16) -> bytes:
    """A PNG written by hand (Pillow writes no 16-bit RGB/RGBA): ``samples`` is (H, W, C) of ``depth`` bits."""
    h, w = samples.shape[:2]
    if depth == 16:
        rows = [samples[y].astype(">u2").tobytes() for y in range(h)]
    else:  # packed grayscale of 1, 2 or 4 bits
        per_byte = 8 // depth
        flat = samples.reshape(h, w).astype(np.uint8)
        padded = np.zeros((h, -(-w // per_byte) * per_byte), np.uint8)
        padded[:, :w] = flat
        groups = padded.reshape(h, -1, per_byte)
        shifts = np.arange(per_byte - 1, -1, -1, dtype=np.uint8) * depth
        rows = [np.bitwise_or.reduce(groups[y] << shifts, axis=1).astype(np.uint8).tobytes() for y in range(h)]
    raw = b"".join(b"\x00" + row for row in rows)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def tiff_bytes(samples: np.ndarray) -> bytes:
    """A baseline little-endian TIFF, uncompressed RGB with 16 bits per sample, one strip."""
    h, w, c = samples.shape
    pixels = samples.astype("<u2").tobytes()
    tags = [  # (tag, type, count, value or None for the out-of-line bits)
        (256, 4, 1, w),
        (257, 4, 1, h),
        (258, 3, c, None),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, None),
        (277, 3, 1, c),
        (278, 4, 1, h),
        (279, 4, 1, len(pixels)),
        (284, 3, 1, 1),
    ]
    ifd_size = 2 + 12 * len(tags) + 4
    bits_at = 8 + ifd_size
    pixels_at = bits_at + 2 * c
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags)))
    for tag, kind, count, value in tags:
        value = bits_at if tag == 258 else pixels_at if tag == 273 else value
        packed = struct.pack("<H", value) + b"\0\0" if kind == 3 and tag != 258 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + packed
    out += struct.pack("<I", 0) + struct.pack(f"<{c}H", *([16] * c)) + pixels
    return bytes(out)


def ppm_bytes(samples: np.ndarray, maxval: int) -> bytes:
    """A binary PPM (P6) with ``maxval``: two bytes per sample above 255."""
    h, w, _ = samples.shape
    body = samples.astype(">u2" if maxval > 255 else np.uint8).tobytes()
    return f"P6\n# made by a test\n{w} {h}\n{maxval}\n".encode() + body


def bmp555_bytes(seed: int = 0) -> bytes:
    """A BMP with 16 bits per pixel (5 bits per sample), which Pillow opens as 8-bit RGB."""
    pixels = np.random.default_rng(seed).integers(0, 1 << 15, (H, W), dtype=np.uint16)
    body = pixels.astype("<u2").tobytes()  # W * 2 bytes per row: a multiple of 4 when W is even
    header = struct.pack("<IiiHHIIiiII", 40, W, H, 1, 16, 0, len(body), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(header) + len(body), 0, 0, 14 + len(header)) + header + body


def jpeg_with_precision(bits: int) -> bytes:
    """An 8-bit baseline JPEG whose SOF declares ``bits`` of precision (12-bit JPEGs: Pillow cannot open them)."""
    out = io.BytesIO()
    Image.fromarray(photo_like(H, W)).save(out, "JPEG", quality=90)
    data = bytearray(out.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 4] = bits
    return bytes(data)


def deep16(channels: int, seed: int = 0) -> np.ndarray:
    """16-bit samples whose low byte matters (an 8-bit copy cannot hold them)."""
    return np.random.default_rng(seed).integers(0, 65536, (H, W, channels), dtype=np.uint16)


# 1. Images with more (or fewer) than 8 bits per sample are stored byte for byte


DEEP_FILES = {
    "rgb16.png": lambda: png_bytes(deep16(3), color_type=2),
    "rgba16.png": lambda: png_bytes(deep16(4, 1), color_type=6),
    "la16.png": lambda: png_bytes(deep16(2, 2), color_type=4),
    "gray4.png": lambda: png_bytes(np.random.default_rng(3).integers(0, 16, (H, W, 1)), color_type=0, depth=4),
    "gray2.png": lambda: png_bytes(np.random.default_rng(4).integers(0, 4, (H, W, 1)), color_type=0, depth=2),
    "rgb16.tif": lambda: tiff_bytes(deep16(3, 5)),
    "rgb16.ppm": lambda: ppm_bytes(deep16(3, 6), 65535),
    "rgb10.ppm": lambda: ppm_bytes(deep16(3, 7) % 1024, 1023),
    "rgb12.jpg": lambda: jpeg_with_precision(12),
    "rgb555.bmp": bmp555_bytes,
}


@pytest.fixture(scope="module")
def deep_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deep") / "src"
    root.mkdir()
    Image.fromarray(photo_like(H, W)).save(root / "photo.png")
    for name, make in DEEP_FILES.items():
        (root / name).write_bytes(make())
    return root


@pytest.fixture(scope="module")
def deep_archive(deep_tree: Path) -> Path:
    out = deep_tree.parent / "deep.aez"
    result = CliRunner().invoke(main, ["pack", str(deep_tree), str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_builders_make_what_pillow_reads_as_8_bit(deep_tree: Path) -> None:
    """The files are the trap: Pillow opens the 16-bit ones in 8-bit modes, which a mode check alone passes."""
    modes = {}
    for name in DEEP_FILES:
        try:
            with Image.open(deep_tree / name) as im:
                modes[name] = im.mode
        except OSError:
            modes[name] = None
    assert modes == {
        "rgb16.png": "RGB",
        "rgba16.png": "RGBA",
        "la16.png": "RGBA",
        "gray4.png": "L",
        "gray2.png": "L",
        "rgb16.tif": "RGB",
        "rgb16.ppm": "RGB",
        "rgb10.ppm": "RGB",
        "rgb12.jpg": None,  # Pillow cannot open 12-bit JPEGs at all
        "rgb555.bmp": "RGB",
    }


@pytest.mark.parametrize("name", sorted(DEEP_FILES))
def test_images_not_8_bit_are_stored_byte_for_byte(deep_tree: Path, deep_archive: Path, name: str) -> None:
    with aezip.open(str(deep_archive)) as arc:
        assert arc.is_image("photo.png")
        assert not arc.is_image(name)
        assert arc.read_bytes(name) == (deep_tree / name).read_bytes()


def test_unpack_restores_the_deep_images_exactly(deep_tree: Path, deep_archive: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["unpack", str(deep_archive), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    for name in DEEP_FILES:
        assert (tmp_path / "out" / name).read_bytes() == (deep_tree / name).read_bytes(), name


# 7. A truncated image is found by the check before encoding, not after everything else is coded


@pytest.fixture
def cut_tree(tmp_path: Path) -> Path:
    """Three good photos (PNG, JPEG, a class folder) and, last in order, a JPEG cut short after its header."""
    root = tmp_path / "src"
    (root / "cats").mkdir(parents=True)
    Image.fromarray(photo_like(H, W, 1)).save(root / "cats" / "a.png")
    Image.fromarray(photo_like(H, W, 2)).save(root / "cats" / "b.jpg", quality=90)
    (root / "labels.csv").write_text("cats/a.png,cat\n")
    out = io.BytesIO()
    Image.fromarray(photo_like(64, 64, 3)).save(out, "JPEG", quality=90)
    (root / "zz-cut.jpg").write_bytes(out.getvalue()[: len(out.getvalue()) * 2 // 3])
    return root


def _no_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    from aezip.codec.codec import Codec

    def refuse(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("encoded before every input was checked")

    monkeypatch.setattr(Codec, "encode_prepared", refuse)


def test_truncated_jpeg_fails_the_pack_before_any_encoding(
    cut_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Image.open(cut_tree / "zz-cut.jpg") as im:
        assert im.size == (64, 64)  # the header is intact: only decoding the pixels finds the damage
    _no_encoding(monkeypatch)
    out = tmp_path / "x.aez"
    result = CliRunner().invoke(main, ["pack", str(cut_tree), str(out)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: zz-cut.jpg: ") and result.output.count("\n") == 1
    assert "truncated" in result.output and "nothing was written (see --on-error)" in result.output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_truncated_jpeg_in_a_sharded_pack_fails_before_any_shard(
    cut_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_encoding(monkeypatch)
    out = tmp_path / "ds"
    result = CliRunner().invoke(main, ["pack", str(cut_tree), str(out), "--shard-images", "1", "--jobs", "1"])
    assert result.exit_code == 1 and "zz-cut.jpg" in result.output and "nothing was written" in result.output
    assert not out.exists()


def test_truncated_jpeg_is_skipped_or_stored_as_asked(cut_tree: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    skip = runner.invoke(main, ["pack", str(cut_tree), str(tmp_path / "s.aez"), "--on-error", "skip"])
    assert skip.exit_code == 0 and "1 skipped" in skip.output and "zz-cut.jpg" in skip.output
    with aezip.open(str(tmp_path / "s.aez")) as arc:
        assert arc.names == ["cats/a.png", "cats/b.jpg", "labels.csv"]
    store = runner.invoke(main, ["pack", str(cut_tree), str(tmp_path / "k.aez"), "--on-error", "store"])
    assert store.exit_code == 0 and "1 unreadable kept as is" in store.output and "zz-cut.jpg" in store.output
    with aezip.open(str(tmp_path / "k.aez")) as arc:
        assert not arc.is_image("zz-cut.jpg") and arc.is_image("cats/b.jpg")
        assert arc.read_bytes("zz-cut.jpg") == (cut_tree / "zz-cut.jpg").read_bytes()


# "Why was it stored raw?": list gives the reason per raw member, the pack summary counts them by reason

RAW_REASONS = {
    "anim.png": "animation (2 frames)",
    "bad.png": "unreadable image: not a readable image (unknown or damaged format)",
    "big.png": "too large (64.0 MP, over 64 MP)",
    "bits.png": "1-bit (mode 1)",
    "cmyk.jpg": "CMYK colour",
    "float.tif": "float samples (mode F)",
    "labels.csv": "not an image",
    "pal.png": "palette (mode P)",
    "rgb16.png": "16-bit samples (PNG bit depth 16)",
    "thin.png": "too small (4×100 px, under 8 px a side)",
}


@pytest.fixture(scope="module")
def odd_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One coded photo and one file of each reason to store a file byte for byte."""
    root = tmp_path_factory.mktemp("odd") / "src"
    root.mkdir()
    rgb = photo_like(H, W)
    Image.fromarray(rgb).save(root / "photo.png")
    frames = [Image.fromarray(rgb), Image.fromarray(photo_like(H, W, 1))]
    frames[0].save(root / "anim.png", save_all=True, append_images=frames[1:])
    (root / "bad.png").write_text("not a picture\n")
    Image.new("L", (8000, 8001)).save(root / "big.png", compress_level=1)  # over 64 MP, a small file
    Image.fromarray(rgb).convert("1").save(root / "bits.png")
    Image.fromarray(rgb).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(rgb[..., 0].astype(np.float32) / 255).save(root / "float.tif")
    (root / "labels.csv").write_text("photo.png,0\n")
    Image.fromarray(rgb).convert("P").save(root / "pal.png")
    (root / "rgb16.png").write_bytes(png_bytes(deep16(3), color_type=2))
    Image.fromarray(photo_like(100, 4)).save(root / "thin.png")
    return root


def test_pack_summary_counts_raw_files_by_reason_and_list_names_each(odd_tree: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "odd.aez"
    packed = runner.invoke(main, ["pack", str(odd_tree), str(out), "--on-error", "store"])
    assert packed.exit_code == 0, packed.output
    assert "packed 11 files (1 coded image)" in packed.output
    counted = next(line for line in packed.output.splitlines() if line.startswith("stored byte for byte:"))
    for label in ("animation", "unreadable image", "too large", "1-bit", "CMYK colour", "float samples"):
        assert f"{label} ×1" in counted
    assert "not an image ×1" in counted and "palette ×1" in counted and "16-bit samples ×1" in counted
    assert "too small ×1" in counted and counted.count("×") == len(RAW_REASONS)

    rows = json.loads(runner.invoke(main, ["list", str(out), "--json"]).output)
    assert {r["name"]: r.get("reason") for r in rows} == {**RAW_REASONS, "photo.png": None}
    listing = runner.invoke(main, ["list", str(out)]).output.splitlines()
    for name, reason in RAW_REASONS.items():
        assert any(line.startswith("raw") and line.endswith(f"  {name}  ({reason})") for line in listing), name
    assert any(line.startswith("image") and line.endswith("  photo.png") for line in listing)


def test_sharded_pack_counts_reasons_also_for_shards_it_reuses(odd_tree: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["pack", str(odd_tree), str(tmp_path / "ds"), "--shard-images", "4", "--on-error", "store", "--json"]
    first = runner.invoke(main, [*args, "--jobs", "1"])
    assert first.exit_code == 0, first.output
    expected = {"16-bit samples": 1, "1-bit": 1, "CMYK colour": 1, "animation": 1, "float samples": 1}
    expected |= {"not an image": 1, "palette": 1, "too large": 1, "too small": 1, "unreadable image": 1}
    assert json.loads(first.output)["stored_by_reason"] == expected
    again = runner.invoke(main, [*args, "--jobs", "1"])  # the same pack again: every shard is reused
    assert again.exit_code == 0, again.output
    body = json.loads(again.output)
    assert body["written"] == [] and body["stored_by_reason"] == expected


@pytest.mark.parametrize(
    "metadata",
    [b'{"lossless": "palette (mode P)", "extra": 1}', b'{"lossless": 16}', b'{"lossless": ""}', b"[1]"],
)
def test_raw_metadata_outside_the_allow_list_is_refused_by_every_reader(tmp_path: Path, metadata: bytes) -> None:
    import zstandard

    from aezip.archive.container import ArchiveWriter, MemberKind

    out = tmp_path / "x.aez"
    with ArchiveWriter(out) as writer:
        data = b"\x89PNG not really"
        payload = zstandard.ZstdCompressor(write_checksum=True, write_content_size=True).compress(data)
        writer.add("a.png", MemberKind.RAW, payload, original_size=len(data), metadata=metadata)
    runner = CliRunner()
    for args in (["list", str(out)], ["verify", str(out)], ["unpack", str(out), str(tmp_path / "dest")]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1 and result.output.startswith("Error: a.png: metadata"), (args, result.output)
        assert result.output.count("\n") == 1
    assert not (tmp_path / "dest").exists()
