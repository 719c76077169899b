"""Sharded datasets: ``manifest.json`` and a reader over all of its shards as one archive.

A sharded dataset is a folder of ``.aez`` archives (``shard-00000.aez`` …) and a ``manifest.json``
naming them with their counts, sizes and sha256 (docs/FORMAT.md, "Sharded datasets"). The manifest
is written last, atomically, so its presence means every shard it lists is complete.

:func:`open_reader` takes an archive, a manifest or a folder holding one, and returns something
with the interface of :class:`aezip.archive.container.ArchiveReader`; :class:`aezip.Archive` (hence
``aezip.open``, ``ImageArchiveDataset`` and every command) reads a dataset through it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aezip.archive.container import ArchiveReader, MemberInfo
from aezip.archive.container import spec as container_spec
from aezip.archive.container.reader import MemberSequence
from aezip.errors import CorruptArchiveError, FormatError, UnsupportedVersionError
from aezip.store.remote import (
    RemoteArchiveReader,
    StorageOptions,
    file_sha256,
    is_url,
    read_url,
    url_is_folder,
    url_sha256,
    url_size,
    write_bytes_atomically,
)

MANIFEST_NAME = "manifest.json"
MANIFEST_KIND = "aezip-manifest"
MANIFEST_VERSION = 1
#: Largest manifest parsed (a million shards fit well under it).
MAX_MANIFEST_BYTES = 256 << 20
_SHARD_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}\.aez")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_COUNTS = ("members", "files", "images", "links", "folders", "bytes_in", "bytes")


@dataclass
class ShardRecord:
    """One shard as the manifest lists it."""

    name: str
    members: int
    files: int
    images: int
    links: int
    folders: int
    bytes_in: int
    bytes: int
    sha256: str
    inputs: str
    first: str
    last: str


@dataclass
class Manifest:
    """The contents of ``manifest.json``: shards in order, the settings they were packed with, totals."""

    shards: list[ShardRecord]
    settings: dict[str, Any] = field(default_factory=dict)
    aezip: str = ""
    version: int = MANIFEST_VERSION

    def totals(self) -> dict[str, int]:
        """Sums of the shards' counts and sizes."""
        sums = {key: sum(getattr(s, key) for s in self.shards) for key in _COUNTS}
        return {"shards": len(self.shards), **sums}

    def to_json(self) -> bytes:
        """The manifest file's bytes: deterministic (sorted keys, no time stamps)."""
        body = {
            "format": MANIFEST_KIND,
            "version": self.version,
            "aezip": self.aezip,
            "settings": self.settings,
            "totals": self.totals(),
            "shards": [asdict(s) for s in self.shards],
        }
        return (json.dumps(body, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def is_manifest_path(path: str | os.PathLike[str], storage_options: StorageOptions = None) -> bool:
    """Whether ``path`` (or URL) names a manifest (a ``.json`` file) or a folder (which must hold one)."""
    if is_url(path):
        assert isinstance(path, str)
        url = path.rstrip("/")
        if url.endswith(".json") or path.endswith("/"):
            return True
        return not url.endswith(".aez") and url_is_folder(url, storage_options)
    return os.fspath(path).endswith(".json") or os.path.isdir(path)


Location = Path | str  # a local path, or a URL (aezip.store.remote)


def manifest_location(path: str | os.PathLike[str]) -> Location:
    """The manifest file (path or URL) for a manifest or a dataset folder."""
    if is_url(path):
        assert isinstance(path, str)
        url = path.rstrip("/")
        return url if url.endswith(".json") else f"{url}/{MANIFEST_NAME}"
    return manifest_file(path)


def shard_location(manifest: Location, name: str) -> Location:
    """Where a shard named ``name`` lies: beside its manifest."""
    return f"{manifest.rsplit('/', 1)[0]}/{name}" if isinstance(manifest, str) else manifest.parent / name


def manifest_file(path: str | os.PathLike[str]) -> Path:
    """The manifest file for a manifest path or a dataset folder."""
    p = Path(path)
    if p.is_dir():
        if not (p / MANIFEST_NAME).is_file():
            raise FormatError(f"{p} is a folder without a {MANIFEST_NAME} (not a sharded dataset)")
        return p / MANIFEST_NAME
    return p


def _count(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CorruptArchiveError(f"manifest: {what} is not a non-negative integer")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise CorruptArchiveError(f"manifest: {what} is not a string")
    return value


def parse_manifest(data: bytes, where: str = "manifest", allow_empty: bool = False) -> Manifest:
    """Check and decode a manifest's bytes (hostile input: every field is checked).

    ``allow_empty`` accepts a list of no shards (the journal of a pack that has just started).
    """
    if len(data) > MAX_MANIFEST_BYTES:
        raise CorruptArchiveError(f"{where}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise FormatError(f"{where}: not JSON (not an aezip manifest)") from None
    if not isinstance(body, dict) or body.get("format") != MANIFEST_KIND:
        raise FormatError(f"{where}: not an aezip manifest")
    version = body.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CorruptArchiveError(f"{where}: bad manifest version {version!r}")
    if version > MANIFEST_VERSION:
        raise UnsupportedVersionError(
            f"{where}: manifest version {version} is newer than this reader's {MANIFEST_VERSION}; upgrade aezip"
        )
    shards_in = body.get("shards")
    if not isinstance(shards_in, list) or not (shards_in or allow_empty):
        raise CorruptArchiveError(f"{where}: no shards listed")
    shards: list[ShardRecord] = []
    names: set[str] = set()
    for n, item in enumerate(shards_in):
        if not isinstance(item, dict):
            raise CorruptArchiveError(f"{where}: shard {n} is not an object")
        name = _text(item.get("name"), f"shard {n} name")
        if not _SHARD_NAME.fullmatch(name) or name in names:
            raise CorruptArchiveError(f"{where}: shard name {name[:80]!r} is not a plain, unique .aez file name")
        names.add(name)
        counts = {key: _count(item.get(key), f"{name} {key}") for key in _COUNTS}
        sha = _text(item.get("sha256"), f"{name} sha256")
        if not _HEX64.fullmatch(sha):
            raise CorruptArchiveError(f"{where}: {name} sha256 is not 64 lowercase hex digits")
        texts = {key: _text(item.get(key, ""), f"{name} {key}") for key in ("inputs", "first", "last")}
        shards.append(ShardRecord(name=name, sha256=sha, **counts, **texts))
    settings = body.get("settings", {})
    if not isinstance(settings, dict):
        raise CorruptArchiveError(f"{where}: settings is not an object")
    return Manifest(shards, settings, str(body.get("aezip", "")), version)


def load_manifest(path: str | os.PathLike[str], storage_options: StorageOptions = None) -> Manifest:
    """Read and check the manifest at ``path`` (a manifest file or its folder, local or a URL)."""
    where = manifest_location(path)
    if isinstance(where, str):
        return parse_manifest(read_url(where, MAX_MANIFEST_BYTES, storage_options), where)
    with open(where, "rb") as fh:
        data = fh.read(MAX_MANIFEST_BYTES + 1)
    return parse_manifest(data, str(where))


def write_manifest(folder: Path, manifest: Manifest, name: str = MANIFEST_NAME) -> Path:
    """Write ``folder/name`` atomically (temporary file, fsync, rename): the commit of a pack."""
    return write_bytes_atomically(folder / name, manifest.to_json())


def shard_paths(path: str | os.PathLike[str], storage_options: StorageOptions = None) -> list[Location]:
    """The shard files (paths or URLs) a manifest (or its folder) lists, in order."""
    where = manifest_location(path)
    return [shard_location(where, s.name) for s in load_manifest(where, storage_options).shards]


def check_checksums(path: str | os.PathLike[str], storage_options: StorageOptions = None) -> int:
    """Compare every shard's sha256 with the manifest's; raises CorruptArchiveError on the first mismatch."""
    where = manifest_location(path)
    manifest = load_manifest(where, storage_options)
    for shard in manifest.shards:
        at = shard_location(where, shard.name)
        digest = url_sha256(at, storage_options) if isinstance(at, str) else file_sha256(at)
        if digest != shard.sha256:
            raise CorruptArchiveError(f"{shard.name}: sha256 differs from the manifest's")
    return len(manifest.shards)


class ShardedReader(MemberSequence):
    """The members of every shard of a manifest, as one archive (the ``ArchiveReader`` interface).

    Opening reads the manifest and each shard's index (a shard whose size differs from the
    manifest's is refused); payloads are read from their shard on demand. Member names are unique
    across shards and obey the same tree rule as within one archive. Picklable like ``ArchiveReader``.
    """

    def __init__(self, path: str | os.PathLike[str], storage_options: StorageOptions = None) -> None:
        self._path = os.fspath(path)
        where = manifest_location(path)
        self._options = storage_options
        self.manifest = load_manifest(where, storage_options)
        self.readers: list[ArchiveReader] = []
        self._where: dict[str, int] = {}
        members: list[MemberInfo] = []
        try:
            for k, shard in enumerate(self.manifest.shards):
                reader = self._open_shard(shard_location(where, shard.name), shard)
                self.readers.append(reader)
                for info in reader.members:
                    if info.name in self._where:
                        if info.kind in container_spec.HIDDEN_KINDS and info.kind == self[info.name].kind:
                            continue  # the same embedded model or tables (named by their sha256) in several shards
                        raise CorruptArchiveError(f"member {info.name!r} is in two shards")
                    self._where[info.name] = k
                    members.append(info)
            container_spec.check_tree([(m.name, m.kind) for m in members])
        except BaseException:
            self.close()
            raise
        self._members = members

    def _open_shard(self, where: Location, shard: ShardRecord) -> ArchiveReader:
        try:
            size = url_size(where, self._options) if isinstance(where, str) else os.path.getsize(where)
        except FileNotFoundError:
            raise CorruptArchiveError(f"shard {shard.name} is missing") from None
        if size != shard.bytes:
            raise CorruptArchiveError(f"shard {shard.name} has {size} bytes, the manifest says {shard.bytes}")
        reader = RemoteArchiveReader(where, self._options) if isinstance(where, str) else ArchiveReader(where)
        if len(reader) != shard.members:
            reader.close()
            raise CorruptArchiveError(
                f"shard {shard.name} has {len(reader)} members, the manifest says {shard.members}"
            )
        return reader

    def __enter__(self) -> ShardedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every shard. Idempotent."""
        for reader in self.readers:
            reader.close()

    @property
    def path(self) -> str:
        return self._path

    @property
    def version(self) -> tuple[int, int]:
        """The highest archive format version among the shards."""
        return max(r.version for r in self.readers)

    @property
    def size(self) -> int:
        """Bytes of all shards together."""
        return sum(s.bytes for s in self.manifest.shards)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._where

    def __getitem__(self, name: str) -> MemberInfo:
        return self._shard(name)[name]

    def __repr__(self) -> str:
        return f"ShardedReader({self._path!r}, shards={len(self.readers)}, members={len(self._members)})"

    def shard_of(self, name: str) -> str:
        """The path of the shard that holds member ``name``."""
        return self._shard(name).path

    def _shard(self, member: str | MemberInfo) -> ArchiveReader:
        name = member.name if isinstance(member, MemberInfo) else member
        try:
            return self.readers[self._where[name]]
        except KeyError:
            raise KeyError(f"no member named {name!r} in {self._path}") from None

    def read_payload(self, member: str | MemberInfo) -> bytes:
        """A member's stored payload, crc32 checked (see ``ArchiveReader.read_payload``)."""
        return self._shard(member).read_payload(member)

    def read_payloads(self, members: Sequence[str | MemberInfo]) -> list[bytes]:
        """Several payloads in the order given: one ``read_payloads`` per shard (merged ranges within each)."""
        by_shard: dict[int, list[int]] = {}
        for k, member in enumerate(members):
            name = member.name if isinstance(member, MemberInfo) else member
            if name not in self._where:
                raise KeyError(f"no member named {name!r} in {self._path}")
            by_shard.setdefault(self._where[name], []).append(k)
        out = [b""] * len(members)
        for shard, positions in by_shard.items():
            found = self.readers[shard].read_payloads([members[k] for k in positions])
            for k, data in zip(positions, found, strict=True):
                out[k] = data
        return out

    def read_link(self, member: str | MemberInfo) -> str:
        """A LINK member's target, checked."""
        return self._shard(member).read_link(member)

    def verify(self) -> None:
        """Check the crc32 of every payload of every shard."""
        for reader in self.readers:
            reader.verify()


def open_reader(path: str | os.PathLike[str], storage_options: StorageOptions = None) -> ArchiveReader | ShardedReader:
    """A reader for an ``.aez`` file, or a sharded one for a manifest or a dataset folder; paths or URLs."""
    if is_manifest_path(path, storage_options):
        return ShardedReader(path, storage_options)
    if is_url(path):
        assert isinstance(path, str)
        return RemoteArchiveReader(path, storage_options)
    return ArchiveReader(path)


def archive_bytes(reader: ArchiveReader | ShardedReader) -> int:
    """Bytes stored of an archive or of all shards of a dataset."""
    return reader.size
