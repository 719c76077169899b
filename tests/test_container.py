"""Tests of the .aez container: round trips, the byte-pinned example of docs/FORMAT.md, hostile input, atomicity."""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from aezip.archive.container import (
    FORMAT_VERSION,
    MAGIC,
    ArchiveReader,
    ArchiveWriter,
    MemberInfo,
    MemberKind,
    spec,
    validate_member_name,
)
from aezip.errors import AezipError, CorruptArchiveError, FormatError, UnsafePathError, UnsupportedVersionError

FORMAT_MD = Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md"
GOLDEN_PAYLOAD = bytes.fromhex("28b52ffd200631000068656c6c6f0a")  # zstd frame of b"hello\n"
GOLDEN_MTIME_NS = 1_700_000_000_000_000_000
GOLDEN = bytes.fromhex(
    "8941455a0d0a1a0a 01 00 00000000 2dc4d34c"  # header: magic, major, minor, flags, crc32
    "28b52ffd200631000068656c6c6f0a"  # payload
    "0500 612e747874 01 0000"  # entry: name length, name, kind, flags
    "1200000000000000 0f00000000000000 7dff8547"  # entry: offset, length, crc32
    "0600000000000000 a4010000 00002a36fe9c9717 00000000"  # entry: original size, mode, mtime, metadata length
    "2100000000000000 3600000000000000 6ebf49cf 01000000 8941455a4944580a"  # footer
)
UNSAFE_NAMES = [
    "../x",
    "/etc/passwd",
    "a/../../b",
    "C:\\x",
    "c:x",
    "a\\b",
    "a//b",
    "",
    ".",
    "a/./b",
    "a/",
    "a\x00b",
    "a\nb",
    "a\x7fb",
    "a\x85b",
    "\udc80",
    "x" * 4097,
]


def _write_golden(path: Path) -> None:
    with ArchiveWriter(path) as writer:
        writer.add("a.txt", MemberKind.RAW, GOLDEN_PAYLOAD, original_size=6, mode=0o644, mtime_ns=GOLDEN_MTIME_NS)


def _sample(path: Path) -> list[tuple[str, MemberKind, bytes, bytes]]:
    """Write a small archive with an empty payload, metadata and unicode names; return what was added."""
    members = [
        ("readme.txt", MemberKind.RAW, zstandard.ZstdCompressor().compress(b"read me\n" * 10), b""),
        ("empty", MemberKind.RAW, b"", b'{"note": "empty"}'),
        ("photos/été/图像 1.png", MemberKind.IMAGE, bytes(range(256)) * 2, b'{"w": 4, "h": 4}'),
    ]
    with ArchiveWriter(path) as writer:
        for number, (name, kind, payload, metadata) in enumerate(members):
            writer.add(
                name,
                kind,
                payload,
                original_size=100 + number,
                mode=0o600 + number,
                mtime_ns=-5 + number,
                metadata=metadata,
            )
    return members


def _entry(name: bytes, payload: bytes, at: int, **fields: int) -> bytes:
    """Encode one index entry without any validation, so tests can write what a hostile writer would."""
    values = {
        "kind": 1,
        "flags": 0,
        "offset": at,
        "length": len(payload),
        "crc": zlib.crc32(payload),
        "original_size": len(payload),
        "mode": 0o644,
        "mtime_ns": 0,
        "name_len": len(name),
        "meta_len": 0,
    }
    values.update(fields)
    fixed = spec.ENTRY_FIXED.pack(
        values["kind"],
        values["flags"],
        values["offset"],
        values["length"],
        values["crc"],
        values["original_size"],
        values["mode"],
        values["mtime_ns"],
    )
    return spec.ENTRY_NAME_LEN.pack(values["name_len"]) + name + fixed + spec.ENTRY_META_LEN.pack(values["meta_len"])


def _craft(
    members: list[tuple[bytes, bytes, dict[str, int]]],
    *,
    header: bytes | None = None,
    count: int | None = None,
    footer_fields: dict[str, int] | None = None,
) -> bytes:
    """Build an archive by hand from (name, payload, entry field overrides); footer fields can be overridden."""
    data, entries, offset = b"", b"", spec.HEADER_SIZE
    for name, payload, fields in members:
        entries += _entry(name, payload, offset, **fields)
        data += payload
        offset += len(payload)
    footer = {
        "index_offset": offset,
        "index_length": len(entries),
        "crc": zlib.crc32(entries),
        "count": len(members) if count is None else count,
    }
    footer.update(footer_fields or {})
    tail = spec.FOOTER.pack(
        footer["index_offset"], footer["index_length"], footer["crc"], footer["count"], spec.FOOTER_MAGIC
    )
    return (header or spec.pack_header()) + data + entries + tail


def _open_bytes(tmp_path: Path, data: bytes) -> ArchiveReader:
    path = tmp_path / "crafted.aez"
    path.write_bytes(data)
    return ArchiveReader(path)


def _golden_from_spec() -> bytes:
    """Parse the annotated hex dump of docs/FORMAT.md, checking its offset column as we go."""
    text = FORMAT_MD.read_text(encoding="utf-8")
    block = re.search(r"<!-- golden-example -->\n```text\n(.*?)```", text, re.S)
    assert block, "FORMAT.md lost its golden example block"
    out = b""
    for line in block.group(1).splitlines():
        offset, hex_bytes, _ = (part.strip() for part in line.split("|"))
        assert int(offset, 16) == len(out), f"offset column wrong at {line!r}"
        out += bytes.fromhex(hex_bytes)
    return out


# --- round trips ---------------------------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a.aez"
    members = _sample(path)
    with ArchiveReader(path) as reader:
        assert len(reader) == 3
        assert [info.name for info in reader] == [m[0] for m in members]
        assert [info.name for info in reader.members] == [m[0] for m in members]
        for number, (name, kind, payload, metadata) in enumerate(members):
            info = reader[name]
            assert name in reader
            assert (info.kind, info.length, info.metadata) == (kind, len(payload), metadata)
            assert (info.original_size, info.mode, info.mtime_ns) == (100 + number, 0o600 + number, -5 + number)
            assert reader.read_payload(name) == payload
            assert reader.read_payload(info) == payload
        assert "missing" not in reader and 3 not in reader
        with pytest.raises(KeyError, match="missing"):
            reader["missing"]
        reader.verify()
        assert reader.version == FORMAT_VERSION


def test_read_one_member_without_reading_the_others(tmp_path: Path) -> None:
    path = tmp_path / "a.aez"
    members = _sample(path)
    with ArchiveReader(path) as reader:
        first = reader.members[0]
    data = bytearray(path.read_bytes())
    data[first.offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with ArchiveReader(path) as reader:
        assert reader.read_payload(members[2][0]) == members[2][2]
        with pytest.raises(CorruptArchiveError, match="crc32"):
            reader.read_payload(first.name)
        with pytest.raises(CorruptArchiveError, match="crc32"):
            reader.verify()


def test_pickled_reader_reads_with_its_own_handle(tmp_path: Path) -> None:
    path = tmp_path / "a.aez"
    members = _sample(path)
    reader = ArchiveReader(path)
    copy = pickle.loads(pickle.dumps(reader))
    reader.close()
    assert copy.members == [info for info in copy]
    assert copy.read_payload(members[2][0]) == members[2][2]
    copy.verify()
    copy.close()
    with pytest.raises(ValueError, match="closed"):
        copy.read_payload(members[0][0])


def test_pickled_reader_notices_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "a.aez"
    _sample(path)
    with ArchiveReader(path) as reader:
        state = pickle.dumps(reader)
    _write_golden(path)
    with pytest.raises(CorruptArchiveError, match="changed"):
        pickle.loads(state).read_payload("empty")


def test_foreign_member_info_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.aez"
    _sample(path)
    with ArchiveReader(path) as reader:
        forged = MemberInfo("empty", MemberKind.RAW, 0, 50, 0, 0, 0, 0, b"")
        with pytest.raises(KeyError):
            reader.read_payload(forged)


def test_empty_archive(tmp_path: Path) -> None:
    path = tmp_path / "empty.aez"
    with ArchiveWriter(path):
        pass
    assert path.stat().st_size == spec.HEADER_SIZE + spec.FOOTER_SIZE
    with ArchiveReader(path) as reader:
        assert len(reader) == 0 and reader.members == []


def test_writer_keeps_only_permission_bits_and_checks_arguments(tmp_path: Path) -> None:
    path = tmp_path / "a.aez"
    with ArchiveWriter(path) as writer:
        writer.add("x", 2, b"p", original_size=1, mode=0o100755)
        for bad in ({"original_size": -1}, {"original_size": 1, "mtime_ns": 1 << 63}, {"original_size": 1.5}):
            with pytest.raises(ValueError):
                writer.add("y", MemberKind.RAW, b"", **bad)
        with pytest.raises(ValueError, match="kind"):
            writer.add("y", 9, b"", original_size=0)
    with ArchiveReader(path) as reader:
        assert reader["x"].mode == 0o755 and reader["x"].kind is MemberKind.IMAGE
    with pytest.raises(ValueError, match="closed"):
        writer.add("z", MemberKind.RAW, b"", original_size=0)


_COMPONENT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/\\"), min_size=1, max_size=8
).filter(lambda part: part not in (".", ".."))
_NAMES = st.lists(_COMPONENT, min_size=1, max_size=3).map("/".join).filter(lambda n: not re.match("[A-Za-z]:", n))


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(_NAMES, st.binary(max_size=300), st.binary(max_size=20)),
        max_size=5,
        unique_by=lambda member: member[0],
    ).filter(lambda ms: not any(b[0].startswith(a[0] + "/") for a in ms for b in ms))  # a file is not a folder
)
def test_round_trip_property(members: list[tuple[str, bytes, bytes]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p.aez"
        with ArchiveWriter(path) as writer:
            for name, payload, metadata in members:
                writer.add(name, MemberKind.RAW, payload, original_size=len(payload), metadata=metadata)
        with ArchiveReader(path) as reader:
            assert [(i.name, i.metadata) for i in reader] == [(n, m) for n, _, m in members]
            for name, payload, _ in members:
                assert reader.read_payload(name) == payload


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=12))
def test_name_rules_property(name: str) -> None:
    try:
        validate_member_name(name)
    except UnsafePathError:
        return
    parts = name.split("/")
    assert name and not name.startswith("/") and "\\" not in name
    assert all(part not in ("", ".", "..") for part in parts)


# --- byte-pinned example -------------------------------------------------------------------------------------


def test_golden_bytes_match_writer_and_spec(tmp_path: Path) -> None:
    path = tmp_path / "golden.aez"
    _write_golden(path)
    assert path.read_bytes() == GOLDEN
    assert _golden_from_spec() == GOLDEN
    assert GOLDEN.startswith(MAGIC)
    assert zstandard.ZstdDecompressor().decompress(GOLDEN_PAYLOAD) == b"hello\n"


def test_output_is_deterministic(tmp_path: Path) -> None:
    _sample(tmp_path / "one.aez")
    _sample(tmp_path / "two.aez")
    assert (tmp_path / "one.aez").read_bytes() == (tmp_path / "two.aez").read_bytes()


# --- hostile input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n" + bytes(64), b"hello world\n" * 10, b"PK\x03\x04"])
def test_foreign_files_are_not_archives(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(FormatError, match="not an aezip archive"):
        _open_bytes(tmp_path, data)


def test_every_truncation_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "a.aez"
    _sample(path)
    for length in range(path.stat().st_size - 1, 0, -1):
        os.truncate(path, length)  # in place: far cheaper than writing a new file per length
        with pytest.raises(CorruptArchiveError, match="truncated"):
            ArchiveReader(path)


def test_every_single_bit_flip_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "a.aez"
    _write_golden(path)
    with open(path, "r+b", buffering=0) as fh:
        for bit in range(len(GOLDEN) * 8):
            position, original = bit // 8, GOLDEN[bit // 8 : bit // 8 + 1]
            fh.seek(position)
            fh.write(bytes([original[0] ^ (1 << (bit % 8))]))
            _assert_detected(path)
            fh.seek(position)
            fh.write(original)


def _assert_detected(path: Path) -> None:
    """A damaged archive must fail to open with a FormatError, or fail verification."""
    try:
        reader = ArchiveReader(path)
    except FormatError:
        return
    with reader, pytest.raises(CorruptArchiveError):
        reader.verify()


@pytest.mark.parametrize("extra", [b"\x00", b"junk" * 50, GOLDEN[-spec.FOOTER_SIZE :]])
def test_trailing_bytes_are_rejected(tmp_path: Path, extra: bytes) -> None:
    with pytest.raises(CorruptArchiveError):
        _open_bytes(tmp_path, GOLDEN + extra)


def test_newer_major_version_is_unsupported(tmp_path: Path) -> None:
    data = _craft([(b"a", b"x", {})], header=spec.pack_header(version=(2, 3)))
    with pytest.raises(UnsupportedVersionError, match=r"2\.3 is newer than this reader.s 1\.3"):
        _open_bytes(tmp_path, data)
    with pytest.raises(FormatError):
        _open_bytes(tmp_path, _craft([], header=spec.pack_header(version=(0, 9))))


def test_newer_minor_version_and_may_ignore_flags_are_readable(tmp_path: Path) -> None:
    data = _craft([(b"a", b"x", {"flags": 0x100})], header=spec.pack_header(flags=1 << 16, version=(1, 7)))
    with _open_bytes(tmp_path, data) as reader:
        assert reader.read_payload("a") == b"x" and reader.version == (1, 7)


@pytest.mark.parametrize(
    "data",
    [
        _craft([(b"a", b"x", {})], header=spec.pack_header(flags=1)),
        _craft([(b"a", b"x", {"flags": 0x01})]),
        _craft([(b"a", b"x", {"kind": 200})]),
    ],
    ids=["archive-flag", "member-flag", "unknown-kind"],
)
def test_unknown_features_are_format_errors(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(FormatError):
        _open_bytes(tmp_path, data)


@pytest.mark.parametrize(
    "data",
    [
        _craft([(b"a", b"x", {"length": 1 << 62})]),
        _craft([(b"a", b"x", {"original_size": 1 << 62, "length": (1 << 64) - 1})]),
        _craft([(b"a", b"x", {"meta_len": (1 << 32) - 1})]),
        _craft([(b"a", b"x", {"name_len": 0xFFFF})]),
        _craft([(b"a", b"x", {})], count=(1 << 32) - 1),
        _craft([(b"a", b"x", {})], footer_fields={"index_length": 1 << 62}),
        _craft([(b"a", b"x", {})], footer_fields={"index_offset": 1 << 62}),
    ],
    ids=["payload", "payload-u64-max", "metadata", "name", "count", "index-length", "index-offset"],
)
def test_huge_declared_sizes_are_rejected_without_allocating(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "huge.aez"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptArchiveError):
            ArchiveReader(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize(
    "members",
    [
        [(b"a", b"xy", {"offset": spec.HEADER_SIZE + 1, "length": 1})],
        [(b"a", b"xy", {"length": 1})],
        [(b"a", b"xy", {}), (b"b", b"z", {"offset": spec.HEADER_SIZE})],
        [(b"a", b"x", {"mode": 0o100644})],
    ],
    ids=["hole", "uncovered-bytes", "overlap", "mode"],
)
def test_inconsistent_entries_are_corrupt(tmp_path: Path, members: list[tuple[bytes, bytes, dict[str, int]]]) -> None:
    with pytest.raises(CorruptArchiveError):
        _open_bytes(tmp_path, _craft(members))


def test_extra_bytes_in_index_are_corrupt(tmp_path: Path) -> None:
    data = _craft([(b"a", b"x", {}), (b"b", b"y", {})], count=1)
    with pytest.raises(CorruptArchiveError):
        _open_bytes(tmp_path, data)


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_unsafe_names_are_refused_by_writer(tmp_path: Path, name: str) -> None:
    with ArchiveWriter(tmp_path / "a.aez") as writer, pytest.raises(UnsafePathError):
        writer.add(name, MemberKind.RAW, b"", original_size=0)


@pytest.mark.parametrize("name", [n.encode("utf-8", "surrogatepass") for n in UNSAFE_NAMES] + [b"\xff\xfe"])
def test_unsafe_names_are_refused_by_reader(tmp_path: Path, name: bytes) -> None:
    with pytest.raises(UnsafePathError):
        _open_bytes(tmp_path, _craft([(name, b"x", {})]))


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    with ArchiveWriter(tmp_path / "a.aez") as writer:
        writer.add("a", MemberKind.RAW, b"", original_size=0)
        with pytest.raises(UnsafePathError, match="duplicate"):
            writer.add("a", MemberKind.IMAGE, b"x", original_size=1)
    with pytest.raises(CorruptArchiveError, match="duplicate"):
        _open_bytes(tmp_path, _craft([(b"a", b"x", {}), (b"a", b"y", {})]))


def test_validate_member_name_accepts_ordinary_paths() -> None:
    for name in ["a", "a.txt", "dir/sub/file.png", ".hidden", "a..b", "名前/ファイル.jpg", "/".join(["x" * 255] * 16)]:
        assert validate_member_name(name) == name
    with pytest.raises(UnsafePathError):
        validate_member_name(b"a")  # type: ignore[arg-type]


# --- atomicity -----------------------------------------------------------------------------------------------


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "out.aez"
    with pytest.raises(RuntimeError), ArchiveWriter(path) as writer:
        writer.add("a", MemberKind.RAW, b"partial", original_size=7)
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "out.aez"
    path.write_bytes(b"precious")
    with pytest.raises(UnsafePathError), ArchiveWriter(path) as writer:
        writer.add("../evil", MemberKind.RAW, b"", original_size=0)
    assert path.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["out.aez"]


def test_abort_and_success_leave_only_the_archive(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path / "aborted.aez")
    writer.add("a", MemberKind.RAW, b"x", original_size=1)
    writer.abort()
    writer.abort()
    assert os.listdir(tmp_path) == []
    _write_golden(tmp_path / "ok.aez")
    assert os.listdir(tmp_path) == ["ok.aez"]


def test_abandoned_writer_cleans_up(tmp_path: Path) -> None:
    writer = ArchiveWriter(tmp_path / "gone.aez")
    writer.add("a", MemberKind.RAW, b"x", original_size=1)
    del writer
    assert os.listdir(tmp_path) == []


def test_errors_form_one_hierarchy() -> None:
    assert issubclass(UnsafePathError, AezipError) and issubclass(CorruptArchiveError, FormatError)
