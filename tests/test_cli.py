"""End to end through the CLI: pack/unpack of a mixed folder tree, listing, verify, bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import aezip
from aezip.archive.container import ArchiveWriter, MemberKind, spec
from aezip.cli.app import main
from tests.conftest import photo_like, psnr

LOSSLESS = ("dogs/pal.png", "dogs/depth16.png", "dogs/deep/tiny.webp")  # palette, 16-bit, 1 px tall
PSNR_FLOOR = 30.0  # dB at the default quality on synthetic photos (shipped model: ~37)
PHOTO_PSNR_FLOOR = 26.0  # dB on the sample photos at the default quality (shipped model: 28.0-31.2)


def _save(path: Path, im: Image.Image, fmt: str, **kw: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, fmt, **kw)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset folder: images of several modes and odd sizes, plus labels and binary files."""
    root = tmp_path_factory.mktemp("src")
    _save(root / "a.png", Image.fromarray(photo_like(37, 53, 1)), "PNG")
    _save(root / "cats" / "b.jpg", Image.fromarray(photo_like(48, 31, 2)), "JPEG", quality=95)
    _save(root / "cats" / "gray.png", Image.fromarray(photo_like(20, 17, 3)[..., 1], "L"), "PNG")
    rgba = Image.fromarray(photo_like(19, 23, 4)).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.random.default_rng(0).integers(0, 256, (19, 23), dtype=np.uint8)))
    _save(root / "cats" / "alpha.png", rgba, "PNG")
    _save(root / "dogs" / "deep" / "tiny.webp", Image.fromarray(photo_like(1, 3, 5)), "WEBP", lossless=True)
    _save(root / "dogs" / "pal.png", Image.fromarray(photo_like(16, 16, 6)).convert("P"), "PNG")
    sixteen = Image.fromarray((np.arange(64 * 8, dtype=np.uint16).reshape(8, 64) * 50).astype(np.uint16))
    _save(root / "dogs" / "depth16.png", sixteen, "PNG")
    (root / "labels.csv").write_text("name,label\na.png,1\ncats/b.jpg,0\n")
    (root / "dogs" / "blob.bin").write_bytes(np.random.default_rng(9).bytes(3000))
    (root / "empty.txt").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def packed(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("arc") / "data.aez"
    result = CliRunner().invoke(main, ["pack", str(tree), str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "packed 10 files (4 coded images)" in result.output
    return out


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}


def test_unpack_restores_every_file(packed: Path, tree: Path, tmp_path: Path, runner: CliRunner) -> None:
    dest = tmp_path / "out"
    result = runner.invoke(main, ["unpack", str(packed), str(dest), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    original, restored = _files(tree), _files(dest)
    assert sorted(original) == sorted(restored)
    for name, src in original.items():
        out = restored[name]
        if name.endswith((".csv", ".bin", ".txt")) or name in LOSSLESS:
            assert out.read_bytes() == src.read_bytes(), name
            continue
        a, b = Image.open(src), Image.open(out)
        assert (a.size, a.mode, a.format) == (b.size, b.mode, b.format), name
        if a.mode in ("RGB", "L"):
            assert psnr(np.asarray(a), np.asarray(b)) > PSNR_FLOOR, name
        if a.mode == "RGBA":
            assert np.array_equal(np.asarray(a.getchannel("A")), np.asarray(b.getchannel("A")))
        assert out.stat().st_mtime_ns == src.stat().st_mtime_ns


def test_format_png_writes_png_reconstructions(packed: Path, tmp_path: Path, runner: CliRunner) -> None:
    dest = tmp_path / "png"
    assert runner.invoke(main, ["unpack", str(packed), str(dest), "--format", "png"]).exit_code == 0
    assert Image.open(dest / "cats" / "b.png").format == "PNG"
    assert (dest / "labels.csv").exists() and not (dest / "cats" / "b.jpg").exists()


def test_random_access_reads_one_member(packed: Path) -> None:
    with aezip.open(str(packed), device="cpu") as archive:
        assert "cats/gray.png" in archive and len(archive) == 10
        assert archive.image("cats/gray.png").mode == "L"
        assert archive.read_bytes("labels.csv").startswith(b"name,label")
        assert not archive.is_image("dogs/pal.png")


def test_list_json_and_info(packed: Path, runner: CliRunner) -> None:
    rows = json.loads(runner.invoke(main, ["list", str(packed), "--json"]).output)
    kinds = {r["name"]: r["kind"] for r in rows}
    assert kinds["a.png"] == "image" and kinds["dogs/pal.png"] == "raw" and len(rows) == 10
    info = runner.invoke(main, ["info", str(packed)])
    assert info.exit_code == 0 and "4 coded images" in info.output and "quality:   6 ×4" in info.output


def test_verify_passes_then_catches_damage(packed: Path, tmp_path: Path, runner: CliRunner) -> None:
    assert runner.invoke(main, ["verify", str(packed)]).exit_code == 0
    damaged = tmp_path / "damaged.aez"
    data = bytearray(packed.read_bytes())
    data[100] ^= 0x40
    damaged.write_bytes(bytes(data))
    result = runner.invoke(main, ["verify", str(damaged)])
    assert result.exit_code == 1 and result.output.startswith("Error:") and "Traceback" not in result.output


@pytest.mark.parametrize("content", [b"", b"hello world", b"\x89PNG\r\n\x1a\n" + bytes(100)])
def test_foreign_files_fail_with_one_line(content: bytes, tmp_path: Path, runner: CliRunner) -> None:
    path = tmp_path / "x.aez"
    path.write_bytes(content)
    dest = tmp_path / "dest"
    for args in (["unpack", str(path), str(dest)], ["list", str(path)], ["info", str(path)], ["verify", str(path)]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1, args
        assert result.output.count("\n") == 1 and result.output.startswith("Error:")
    assert not dest.exists()


def test_truncated_archive_leaves_no_output(packed: Path, tmp_path: Path, runner: CliRunner) -> None:
    data = packed.read_bytes()
    cut = tmp_path / "cut.aez"
    cut.write_bytes(data[: len(data) // 2])
    dest = tmp_path / "dest"
    result = runner.invoke(main, ["unpack", str(cut), str(dest)])
    assert result.exit_code == 1 and "truncated" in result.output
    assert not dest.exists() and list(tmp_path.iterdir()) == [cut]


def test_corrupt_member_midway_leaves_no_partial_tree(packed: Path, tmp_path: Path, runner: CliRunner) -> None:
    with aezip.open(str(packed)) as archive:
        last = archive.members[-1]
    data = bytearray(packed.read_bytes())
    data[last.offset + last.length // 2] ^= 0xFF
    bad = tmp_path / "bad.aez"
    bad.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    dest.mkdir()
    result = runner.invoke(main, ["unpack", str(bad), str(dest)])
    assert result.exit_code == 1
    assert list(dest.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["bad.aez", "dest"]


def _hostile_archive(path: Path, name: str) -> None:
    """An archive whose one RAW member has ``name``, written byte by byte past the writer's checks."""
    import zlib

    import zstandard

    payload = zstandard.ZstdCompressor().compress(b"pwned")
    header = spec.pack_header()
    info = spec.MemberInfo(name, MemberKind.RAW, len(header), len(payload), zlib.crc32(payload), 5, 0o644, 0, b"")
    index = spec.pack_entry(info)
    path.write_bytes(header + payload + index + spec.pack_footer(len(header) + len(payload), index, 1))


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/evil", "a/../../b", "C:/x"])
def test_member_names_cannot_escape(name: str, tmp_path: Path, runner: CliRunner) -> None:
    arc = tmp_path / "evil.aez"
    _hostile_archive(arc, name)
    result = runner.invoke(main, ["unpack", str(arc), str(tmp_path / "dest")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["evil.aez"]


def test_huge_declared_size_is_refused(tmp_path: Path, runner: CliRunner) -> None:
    import zlib

    import zstandard

    payload = zstandard.ZstdCompressor().compress(b"\0" * 1000)
    header = spec.pack_header()
    crc = zlib.crc32(payload)
    info = spec.MemberInfo("x.bin", MemberKind.RAW, len(header), len(payload), crc, 2**40, 0o644, 0, b"")
    index = spec.pack_entry(info)
    arc = tmp_path / "huge.aez"
    arc.write_bytes(header + payload + index + spec.pack_footer(len(header) + len(payload), index, 1))
    result = runner.invoke(main, ["unpack", str(arc), str(tmp_path / "dest")])
    assert result.exit_code == 1 and "wrong length" in result.output
    assert not (tmp_path / "dest").exists()


def test_unreadable_image_fails_pack_without_output(tmp_path: Path, runner: CliRunner) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out.aez"
    result = runner.invoke(main, ["pack", str(src), str(out)])
    assert result.exit_code == 1 and "broken.jpg" in result.output and result.output.count("\n") == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_failed_pack_keeps_existing_archive(tmp_path: Path, runner: CliRunner) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "broken.png").write_bytes(b"junk")
    out = tmp_path / "out.aez"
    out.write_bytes(b"previous archive")
    assert runner.invoke(main, ["pack", str(src), str(out), "--force"]).exit_code == 1
    assert out.read_bytes() == b"previous archive"


def test_archive_inside_source_is_not_packed_into_itself(tmp_path: Path, runner: CliRunner) -> None:
    (tmp_path / "a.txt").write_text("x")
    out = tmp_path / "self.aez"
    assert runner.invoke(main, ["pack", str(tmp_path), str(out)]).exit_code == 0
    assert runner.invoke(main, ["pack", str(tmp_path), str(out), "--force"]).exit_code == 0
    assert [m.name for m in aezip.open(str(out)).members] == ["a.txt"]


def test_model_mismatch_is_reported(packed: Path, tmp_path: Path, runner: CliRunner) -> None:
    with aezip.open(str(packed)) as archive:
        member = archive.info("a.png")
        payload = bytearray(archive.payload("a.png"))
    payload[8:24] = b"\x11" * 16
    arc = tmp_path / "other.aez"
    with ArchiveWriter(arc) as writer:
        writer.add("a.png", MemberKind.IMAGE, bytes(payload), original_size=1, metadata=member.metadata)
    result = runner.invoke(main, ["unpack", str(arc), str(tmp_path / "dest")])
    assert result.exit_code == 1 and "11" * 16 in result.output and "--model" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["pack"],
        ["pack", "nonexistent-dir", "x.aez"],
        ["pack", ".", "x.aez", "-q", "9"],
        ["unpack", "--format", "gif"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(args: list[str], runner: CliRunner) -> None:
    assert runner.invoke(main, args).exit_code == 2


def test_single_file_and_stdout_summary(tmp_path: Path, runner: CliRunner) -> None:
    img = tmp_path / "one.png"
    Image.fromarray(photo_like(32, 32)).save(img)
    out = tmp_path / "one.aez"
    result = runner.invoke(main, ["pack", str(img), str(out), "-q", "3", "--entropy", "zstd"])
    assert result.exit_code == 0 and "ratio" in result.output
    restored = aezip.open(str(out)).read_bytes("one.png")
    assert Image.open(io.BytesIO(restored)).size == (32, 32)


def test_quick_start_on_the_shipped_sample_photos(tmp_path: Path, runner: CliRunner) -> None:
    """README's quick start: pack and unpack examples/photos with the default model."""
    photos = Path(__file__).resolve().parents[1] / "examples" / "photos"
    arc, dest = tmp_path / "photos.aez", tmp_path / "restored"
    assert runner.invoke(main, ["pack", str(photos), str(arc)]).exit_code == 0
    assert runner.invoke(main, ["unpack", str(arc), str(dest)]).exit_code == 0
    assert (dest / "labels.csv").read_bytes() == (photos / "labels.csv").read_bytes()
    for name in ("monarch.png", "peppers.jpg", "boats/sail.webp"):
        a, b = Image.open(photos / name), Image.open(dest / name)
        assert (a.size, a.format) == (b.size, b.format)
        assert psnr(np.asarray(a), np.asarray(b)) > PHOTO_PSNR_FLOOR
    assert arc.stat().st_size < sum(p.stat().st_size for p in photos.rglob("*") if p.is_file()) / 3


def test_entropy_option_offers_exactly_the_codecs_choices() -> None:
    """The CLI spells the choices out (importing the codec would load torch for ``--help``): keep them in step."""
    from aezip.codec.codec import ENTROPY_CHOICES

    option = next(p for p in main.commands["pack"].params if p.name == "entropy")
    assert sorted(option.type.choices) == sorted(ENTROPY_CHOICES)
