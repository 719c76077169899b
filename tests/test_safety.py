"""The user's files and machine: no clobbering, skip-and-report, links, signals, hostile metadata (issue 13)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import zstandard
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import aezip
from aezip.archive.container import ArchiveWriter, MemberKind, spec
from aezip.archive.container.spec import validate_link_target
from aezip.cli.app import main
from aezip.errors import UnsafePathError
from tests.conftest import photo_like

ROOT = Path(__file__).resolve().parents[1]


def _photo(path: Path, h: int = 24, w: int = 32, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo_like(h, w, seed)).save(path)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    _photo(root / "a.png")
    (root / "labels.csv").write_text("a.png,1\n")
    return root


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    _photo(root / "src" / "a.png")
    _photo(root / "src" / "b.jpg".replace(".jpg", ".png"), seed=1)
    (root / "src" / "labels.csv").write_text("a.png,1\n")
    out = root / "x.aez"
    assert CliRunner().invoke(main, ["pack", str(root / "src"), str(out)]).exit_code == 0
    return out


# 1. pack never clobbers; OUT/ is a folder


def test_pack_refuses_to_overwrite_without_force(src: Path, tmp_path: Path, runner: CliRunner) -> None:
    out = tmp_path / "labels.csv"
    out.write_text("precious\n")
    result = runner.invoke(main, ["pack", str(src / "a.png"), str(out)])
    assert result.exit_code == 1 and "already exists" in result.output and "--force" in result.output
    assert out.read_text() == "precious\n"
    assert runner.invoke(main, ["pack", str(src / "a.png"), str(out), "--force"]).exit_code == 0
    assert aezip.open(str(out)).names == ["a.png"]


def test_pack_api_never_replaces_when_asked_not_to(tmp_path: Path) -> None:
    out = tmp_path / "x.aez"
    with ArchiveWriter(out, overwrite=False) as writer:
        writer.add("a", MemberKind.RAW, zstandard.ZstdCompressor(write_checksum=True).compress(b"a"), original_size=1)
        out.write_bytes(b"appeared meanwhile")
        with pytest.raises(FileExistsError):
            writer.close()
    assert out.read_bytes() == b"appeared meanwhile" and sorted(p.name for p in tmp_path.iterdir()) == ["x.aez"]


@pytest.mark.parametrize("existing", [True, False])
def test_pack_into_a_folder_names_the_archive_after_the_source(
    existing: bool, src: Path, tmp_path: Path, runner: CliRunner
) -> None:
    folder = tmp_path / "out"
    if existing:
        folder.mkdir()
    target = str(folder) if existing else str(folder) + "/"
    result = runner.invoke(main, ["pack", str(src), target])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["data.aez"]


def test_errors_name_the_users_path_not_a_temporary_file(src: Path, tmp_path: Path, runner: CliRunner) -> None:
    out = tmp_path / "missing" / "x.aez"
    result = runner.invoke(main, ["pack", str(src), str(out)])
    assert result.exit_code == 1 and str(out) in result.output and ".tmp" not in result.output


# 2. unpack never clobbers


def test_unpack_refuses_to_replace_files(archive: Path, tmp_path: Path, runner: CliRunner) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "labels.csv").write_text("mine\n")
    (dest / "a.png").write_text("mine too\n")
    (dest / "other.txt").write_text("untouched\n")
    result = runner.invoke(main, ["unpack", str(archive), str(dest)])
    assert result.exit_code == 1 and "2 files would be replaced" in result.output
    assert "a.png" in result.output and "labels.csv" in result.output and "--force" in result.output
    assert sorted(p.name for p in dest.iterdir()) == ["a.png", "labels.csv", "other.txt"]
    assert (dest / "labels.csv").read_text() == "mine\n" and len(list(tmp_path.iterdir())) == 1

    result = runner.invoke(main, ["unpack", str(archive), str(dest), "--skip-existing"])
    assert result.exit_code == 0 and "2 existing files kept" in result.output
    assert (dest / "labels.csv").read_text() == "mine\n" and (dest / "b.png").stat().st_size > 100

    result = runner.invoke(main, ["unpack", str(archive), str(dest), "--force"])
    assert result.exit_code == 0 and (dest / "labels.csv").read_text() == "a.png,1\n"
    assert (dest / "other.txt").read_text() == "untouched\n"


def test_unpack_force_and_skip_existing_exclude_each_other(archive: Path, tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(main, ["unpack", str(archive), str(tmp_path / "d"), "--force", "--skip-existing"])
    assert result.exit_code == 2


def test_unpack_never_replaces_a_folder_with_a_file(archive: Path, tmp_path: Path, runner: CliRunner) -> None:
    dest = tmp_path / "dest"
    (dest / "a.png").mkdir(parents=True)
    result = runner.invoke(main, ["unpack", str(archive), str(dest), "--force"])
    assert result.exit_code == 1 and "a.png is a folder" in result.output


# 3. --on-error, checked before any encoding


@pytest.fixture
def broken(src: Path) -> Path:
    (src / "zzz-broken.png").write_text("this is a text file\n")
    return src


def test_unreadable_image_fails_before_any_encoding(
    broken: Path, tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aezip.codec.codec import Codec

    def no_encoding(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("encoded before every input was checked")

    monkeypatch.setattr(Codec, "encode_prepared", no_encoding)
    out = tmp_path / "x.aez"
    result = runner.invoke(main, ["pack", str(broken), str(out)])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "zzz-broken.png" in result.output and "<_io" not in result.output and "--on-error" in result.output
    assert not out.exists()


def test_on_error_skip_and_store_report_the_names(broken: Path, tmp_path: Path, runner: CliRunner) -> None:
    skip = runner.invoke(main, ["pack", str(broken), str(tmp_path / "s.aez"), "--on-error", "skip"])
    assert skip.exit_code == 0 and "1 skipped" in skip.output and "zzz-broken.png" in skip.output
    assert aezip.open(str(tmp_path / "s.aez")).names == ["a.png", "labels.csv"]
    store = runner.invoke(main, ["pack", str(broken), str(tmp_path / "k.aez"), "--on-error", "store"])
    assert store.exit_code == 0 and "1 unreadable kept as is" in store.output and "zzz-broken.png" in store.output
    with aezip.open(str(tmp_path / "k.aez")) as arc:
        assert arc.read_bytes("zzz-broken.png") == b"this is a text file\n" and not arc.is_image("zzz-broken.png")


def test_image_damaged_past_its_header_follows_on_error(src: Path, tmp_path: Path, runner: CliRunner) -> None:
    data = (src / "a.png").read_bytes()
    (src / "cut.png").write_bytes(data[: len(data) // 2])  # header fine, pixels missing
    result = runner.invoke(main, ["pack", str(src), str(tmp_path / "f.aez")])
    assert result.exit_code == 1 and "cut.png" in result.output and not (tmp_path / "f.aez").exists()
    result = runner.invoke(main, ["pack", str(src), str(tmp_path / "k.aez"), "--on-error", "store"])
    assert result.exit_code == 0 and "cut.png" in result.output
    assert aezip.open(str(tmp_path / "k.aez")).read_bytes("cut.png") == data[: len(data) // 2]


# 4. signals


def _start_pack(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    src = tmp_path / "src"
    for i in range(40):
        _photo(src / f"{i:02}.png", 256, 256, i)
    out = tmp_path / "out.aez"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "aezip", "pack", str(src), str(out), "--device", "cpu", "--threads", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "pack ended before it could be interrupted"
        time.sleep(0.05)
    return proc, out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signals_remove_temporary_files(sig: signal.Signals, tmp_path: Path) -> None:
    proc, out = _start_pack(tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert b"Traceback" not in err and sig.name.encode() in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


# 6. links and empty folders


def test_links_are_stored_as_links_and_empty_folders_kept(src: Path, tmp_path: Path, runner: CliRunner) -> None:
    (src / "sub" / "empty").mkdir(parents=True)
    os.symlink("../a.png", src / "sub" / "a-link.png")
    os.symlink("sub", src / "folder-link")
    os.symlink("nowhere", src / "dangling")
    os.symlink("/etc/passwd", src / "absolute")
    os.symlink("../../outside", src / "sub" / "escape")
    os.mkfifo(src / "fifo")
    out = tmp_path / "x.aez"
    result = runner.invoke(main, ["pack", str(src), str(out)])
    assert result.exit_code == 0, result.output
    assert "3 links" in result.output and "1 empty folder" in result.output and "3 skipped" in result.output
    for name in ("absolute", "sub/escape", "fifo"):
        assert name in result.output
    with aezip.open(str(out)) as arc:
        assert arc.info("sub/a-link.png").kind == MemberKind.LINK and arc.link_target("folder-link") == "sub"
    assert aezip.archive.container.ArchiveReader(out).version == (1, 1)
    listing = runner.invoke(main, ["list", str(out)]).output
    assert listing.splitlines()[0].split() == ["kind", "size", "stored", "name"] and "-> ../a.png" in listing
    assert runner.invoke(main, ["verify", str(out)]).exit_code == 0

    dest = tmp_path / "dest"
    assert runner.invoke(main, ["unpack", str(out), str(dest)]).exit_code == 0
    assert os.readlink(dest / "sub" / "a-link.png") == "../a.png" and os.readlink(dest / "dangling") == "nowhere"
    assert (dest / "folder-link" / "a-link.png").is_file() and (dest / "sub" / "empty").is_dir()
    assert not os.path.lexists(dest / "absolute") and not os.path.lexists(dest / "fifo")


def _archive(path: Path, members: list[tuple[str, int, bytes]]) -> None:
    """Write members byte by byte, past the writer's checks."""
    header = spec.pack_header(version=(1, 1))
    body, index, offset = [header], [], len(header)
    for name, kind, payload in members:
        crc, size = zlib.crc32(payload), 1 if payload == RAW_A else len(payload)
        info = spec.MemberInfo(name, MemberKind(kind), offset, len(payload), crc, size, 0o644, 0, b"")
        index.append(spec.pack_entry(info))
        body.append(payload)
        offset += len(payload)
    idx = b"".join(index)
    path.write_bytes(b"".join(body) + idx + spec.pack_footer(offset, idx, len(members)))


RAW_A = zstandard.ZstdCompressor(write_checksum=True).compress(b"a")


@pytest.mark.parametrize(
    "members",
    [
        [("l", 3, b"/etc/passwd")],
        [("l", 3, b"../x")],
        [("d/l", 3, b"../../x")],
        [("d/l", 3, b"a/../../x")],  # '..' after a name could climb through another link
        [("p/q", 3, b".."), ("r", 3, b"p/q/..")],
        [("a", 1, RAW_A), ("a/b", 1, RAW_A)],  # a file and a folder of the same name
        [("x" * 256, 1, RAW_A)],  # over-long path component
        [("l", 3, b"a"), ("l/b", 1, RAW_A)],  # a member written through a link
    ],
    ids=["absolute", "up", "up-twice", "up-after-name", "chain", "file-and-folder", "long-component", "through-link"],
)
def test_hostile_links_and_names_fail_verify_and_unpack_alike(
    members: list[tuple[str, int, bytes]], tmp_path: Path, runner: CliRunner
) -> None:
    arc = tmp_path / "evil.aez"
    _archive(arc, members)
    for args in (["verify", str(arc)], ["unpack", str(arc), str(tmp_path / "dest")], ["list", str(arc)]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1 and result.output.startswith("Error:"), (args, result.output)
        assert result.output.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.aez"]


@given(st.lists(st.sampled_from(["..", "a", "b", ".", ""]), min_size=1, max_size=6), st.integers(0, 3))
def test_accepted_link_targets_stay_inside(parts: list[str], depth: int) -> None:
    import posixpath

    name = "/".join(["d"] * depth + ["link"])
    target = "/".join(parts)
    try:
        validate_link_target(name, target)
    except UnsafePathError:
        return
    resolved = posixpath.normpath(posixpath.join("/root", posixpath.dirname(name), target))
    assert resolved == "/root" or resolved.startswith("/root/")
    assert "." not in target.split("/") and "" not in target.split("/")


def test_thousand_folder_deep_name_is_a_clean_result(tmp_path: Path, runner: CliRunner) -> None:
    name = "/".join(["d"] * 1000) + "/f"
    arc = tmp_path / "deep.aez"
    _archive(arc, [(name, 1, RAW_A)])
    verify = runner.invoke(main, ["verify", str(arc)])
    unpack = runner.invoke(main, ["unpack", str(arc), str(tmp_path / "dest")])
    assert verify.exit_code == 0 and unpack.exit_code == 0, unpack.output
    assert (tmp_path / "dest" / name).read_bytes() == b"a"
    from aezip.archive.pack import remove_tree

    remove_tree(tmp_path / "dest")  # pytest's own cleanup would recurse 1,000 levels deep
    assert not (tmp_path / "dest").exists()


# Hostile archives: stored files, metadata


@pytest.mark.parametrize("damage", ["cut-checksum", "no-checksum-flag"])
def test_stored_file_integrity_is_end_to_end(damage: str, tmp_path: Path, runner: CliRunner) -> None:
    frame = zstandard.ZstdCompressor(write_checksum=True, write_content_size=True).compress(b"hello world\n" * 50)
    if damage == "cut-checksum":
        frame = frame[:-4]
    else:
        frame = frame[:4] + bytes([frame[4] & ~4]) + frame[5:-4]
    header = spec.pack_header()
    info = spec.MemberInfo("t.txt", MemberKind.RAW, 18, len(frame), zlib.crc32(frame), 600, 0o644, 0, b"")
    idx = spec.pack_entry(info)
    arc = tmp_path / "x.aez"
    arc.write_bytes(header + frame + idx + spec.pack_footer(18 + len(frame), idx, 1))
    assert runner.invoke(main, ["verify", str(arc)]).exit_code == 1
    result = runner.invoke(main, ["unpack", str(arc), str(tmp_path / "dest")])
    assert result.exit_code == 1 and not (tmp_path / "dest").exists()


def _with_metadata(src: Path, tmp_path: Path, meta: bytes) -> Path:
    good = tmp_path / "good.aez"
    assert CliRunner().invoke(main, ["pack", str(src / "a.png"), str(good)]).exit_code == 0
    with aezip.open(str(good)) as arc:
        info, payload = arc.info("a.png"), arc.payload("a.png")
    bad = tmp_path / "bad.aez"
    with ArchiveWriter(bad) as writer:
        writer.add("a.png", MemberKind.IMAGE, payload, original_size=info.original_size, metadata=meta)
    return bad


@pytest.mark.parametrize(
    "meta",
    [
        b'{"format": "GIF", "mode": "RGB"}',
        b'{"format": "PDF", "mode": "RGB"}',
        b'{"format": 0}',
        b'{"format": ["PNG"]}',
        b'{"format": "PNG", "mode": "P"}',
        b'{"format": "PNG", "mode": "L"}',  # the stream holds RGB
        b'{"format": "JPEG", "exif": "zz"}',
        b'{"format": "JPEG", "exif": "00112233"}',
        b'{"format": "JPEG", "exif": "4578696600004d4d002a' + b"00" * 70000 + b'"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
    ],
    ids=[
        "gif",
        "pdf",
        "int",
        "list",
        "palette",
        "mode-mismatch",
        "exif-hex",
        "exif-no-tiff",
        "exif-huge",
        "deep-array",
        "deep-object",
    ],
)
def test_hostile_image_metadata_is_refused(meta: bytes, src: Path, tmp_path: Path, runner: CliRunner) -> None:
    bad = _with_metadata(src, tmp_path, meta)
    for args in (["verify", str(bad)], ["unpack", str(bad), str(tmp_path / "dest")]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1 and result.output.startswith("Error:") and result.output.count("\n") == 1, (
            result.output[:300]
        )
    assert not (tmp_path / "dest").exists()


# 8. messages


def test_messages_use_singular_and_plural(src: Path, tmp_path: Path, runner: CliRunner) -> None:
    out = tmp_path / "one.aez"
    result = runner.invoke(main, ["pack", str(src / "a.png"), str(out)])
    assert "packed 1 file (1 coded image)" in result.output
    result = runner.invoke(main, ["unpack", str(out), str(tmp_path / "d")])
    assert "restored 1 file (1 decoded image)" in result.output
    assert "ok: 1 member (1 coded image) verified" in runner.invoke(main, ["verify", str(out)]).output


def test_help_texts(runner: CliRunner) -> None:
    pack_help = runner.invoke(main, ["pack", "--help"]).output
    assert "may be repeated" not in pack_help and "--on-error" in pack_help and "--force" in pack_help
    assert "may be repeated" in runner.invoke(main, ["verify", "--help"]).output
    unpack_help = " ".join(runner.invoke(main, ["unpack", "--help"]).output.split())
    assert "--jpeg-quality" in unpack_help and "4:4:4" in unpack_help
    train = main.commands["train"]
    assert all(p.help for p in train.params if isinstance(p, __import__("click").Option) and p.name != "help")
    steps = next(p for p in train.params if p.name == "steps")
    assert steps.default <= 25_000


def test_second_model_for_pack_is_a_usage_error(src: Path, tmp_path: Path, runner: CliRunner) -> None:
    args = ["pack", str(src), str(tmp_path / "x.aez"), "--model", __file__, "--model", __file__]
    assert runner.invoke(main, args).exit_code == 2


def test_unpack_reports_progress_per_image_in_order(tmp_path: Path) -> None:
    """The progress bar moves once per member, in archive order, whatever the number of jobs."""
    from aezip.archive.pack import unpack

    src = tmp_path / "src"
    for i in range(5):
        _photo(src / f"{i}.png", 64, 64, i)
    out = tmp_path / "x.aez"
    assert CliRunner().invoke(main, ["pack", str(src), str(out), "-q", "1"]).exit_code == 0
    for jobs in (1, 3):
        seen: list[str] = []
        with aezip.open(str(out)) as arc:
            unpack(arc, tmp_path / f"out{jobs}", progress=seen.append, jobs=jobs)
        assert seen == [f"{i}.png" for i in range(5)]


# 9. JPEG restore quality


def test_jpeg_quality_option(tmp_path: Path, runner: CliRunner) -> None:
    img = tmp_path / "p.jpg"
    Image.fromarray(photo_like(64, 64, 3)).save(img, quality=80)
    out = tmp_path / "p.aez"
    assert runner.invoke(main, ["pack", str(img), str(out)]).exit_code == 0
    sizes = {}
    for q in (50, 95):
        dest = tmp_path / f"q{q}"
        assert runner.invoke(main, ["unpack", str(out), str(dest), "--jpeg-quality", str(q)]).exit_code == 0
        assert Image.open(dest / "p.jpg").format == "JPEG"
        sizes[q] = (dest / "p.jpg").stat().st_size
    assert sizes[50] < sizes[95]


def test_metadata_json_is_what_pack_writes(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.aez"
    assert CliRunner().invoke(main, ["pack", str(src), str(out)]).exit_code == 0
    with aezip.open(str(out)) as arc:
        assert json.loads(arc.info("a.png").metadata) == {"format": "PNG", "mode": "RGB"}
        assert np.asarray(arc.image("a.png")).shape == (24, 32, 3)
