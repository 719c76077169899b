"""Leave aezip without friction: an archive's images as WebDataset shards or an image folder tree,
and a WebDataset tar (or any tar) as input to ``aezip pack``.

* ``webdataset``: tar shards ``DEST/STEM-000000.tar``, ``shard_size`` samples each, in archive order.
  A sample is the image (``KEY.png``, or the original format) and ``KEY.json`` with the member's
  name, size and mode. ``KEY`` is the member name without its suffix, with the other dots of the
  file name turned into ``_`` (WebDataset splits a key from its extensions at the first dot), made
  unique if two members would share one.
* ``imagefolder``: the images at their member paths (``.png``, or the original format), the layout
  torchvision's ``ImageFolder`` and Hugging Face's ``imagefolder`` read (class = folder).

Coded images are the reconstruction (PNG is lossless; ``original`` re-encodes JPEG at
``jpeg_quality``); losslessly stored images are their original bytes. Members that are not
images (labels, CSV, links, folders) are left out and counted: ``aezip unpack`` restores them.
Output is all-or-nothing: written in a temporary place and moved into ``DEST`` when complete.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from aezip.archive.container import MemberInfo, MemberKind, validate_member_name
from aezip.archive.reader import Archive, render
from aezip.codec.imagefile import DEFAULT_JPEG_QUALITY
from aezip.errors import AezipError, UnsafePathError
from aezip.loader.dataset import is_dataset_image

EXPORT_FORMATS = ("webdataset", "imagefolder")
IMAGE_FORMATS = ("png", "original")
DEFAULT_SHARD_SIZE = 10_000
#: Images decoded together (one batched synthesis per latent shape).
DECODE_CHUNK = 16
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")


@dataclass
class ExportSummary:
    """What :func:`export` wrote: image count, files (shards or images), bytes, members left out."""

    images: int = 0
    files: int = 0
    bytes_out: int = 0
    left_out: int = 0


def _image_files(
    archive: Archive, members: list[MemberInfo], image_format: str, jpeg_quality: int
) -> Iterator[tuple[MemberInfo, str, bytes]]:
    """Each image member with its output name and file bytes, coded ones decoded in batches."""
    for first in range(0, len(members), DECODE_CHUNK):
        chunk = members[first : first + DECODE_CHUNK]
        coded = [m.name for m in chunk if m.kind == MemberKind.IMAGE]
        decoded = dict(zip(coded, archive.decode(coded), strict=True)) if coded else {}
        for m in chunk:
            if m.kind == MemberKind.IMAGE:
                data = render(m, decoded.pop(m.name), image_format, jpeg_quality)
                name = str(PurePosixPath(m.name).with_suffix(".png")) if image_format == "png" else m.name
            else:
                data, name = archive.read_bytes(m.name), m.name
            yield m, name, data


def sample_key(name: str, used: set[str]) -> str:
    """A WebDataset key for a member name: no suffix, no other dot in the file name, unique in ``used``."""
    folder, base = posixpath.split(name)
    stem, dot, suffix = base.rpartition(".")
    stem = (stem if dot else base).replace(".", "_") or "_"
    key = posixpath.join(folder, stem)
    if key in used:
        key = f"{key}_{suffix.lower()}" if dot else key
        n = 1
        while key in used:
            key, n = f"{posixpath.join(folder, stem)}_{n}", n + 1
    used.add(key)
    return key


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime_ns: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, mtime_ns // 1_000_000_000
    tar.addfile(info, io.BytesIO(data))


def export(
    archive: Archive,
    dest: Path,
    fmt: str,
    *,
    image_format: str = "png",
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    shard_size: int = DEFAULT_SHARD_SIZE,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ExportSummary:
    """Write the images of ``archive`` under ``dest`` as ``webdataset`` shards or an ``imagefolder``.

    ``dest`` may exist only as an empty folder unless ``overwrite`` (then files of the same names
    are replaced and others kept).
    """
    if fmt not in EXPORT_FORMATS:
        raise AezipError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    if image_format not in IMAGE_FORMATS:
        raise AezipError(f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {image_format!r}")
    if shard_size < 1:
        raise AezipError("shard size must be positive")
    if dest.exists() and not dest.is_dir():
        raise AezipError(f"destination exists and is not a folder: {dest}")
    if dest.is_dir() and any(dest.iterdir()) and not overwrite:
        raise AezipError(f"{dest} is not empty (use --force to write into it)")
    images = [m for m in archive.members if is_dataset_image(m)]
    summary = ExportSummary(images=len(images), left_out=len(archive.members) - len(images))
    if not images:
        raise AezipError(f"{archive.path} holds no images")
    with _staging(dest) as stage:
        files = _image_files(archive, images, image_format, jpeg_quality)
        if fmt == "webdataset":
            _write_shards(stage, Path(archive.path).name.removesuffix(".aez") or "shard", files, shard_size, progress)
        else:
            for m, name, data in files:
                target = _path_under(stage, name)
                target.write_bytes(data)
                if m.mtime_ns:
                    os.utime(target, ns=(m.mtime_ns, m.mtime_ns))
                if progress:
                    progress(m.name)
        written = [p for p in stage.rglob("*") if p.is_file()]
        summary.files = len(written)
        summary.bytes_out = sum(p.stat().st_size for p in written)
        _move_into(stage, dest)
    return summary


def _write_shards(
    stage: Path,
    stem: str,
    files: Iterator[tuple[MemberInfo, str, bytes]],
    shard_size: int,
    progress: Callable[[str], None] | None,
) -> None:
    used: set[str] = set()
    tar: tarfile.TarFile | None = None
    try:
        for n, (m, name, data) in enumerate(files):
            if n % shard_size == 0:
                if tar is not None:
                    tar.close()
                tar = tarfile.open(stage / f"{stem}-{n // shard_size:06d}.tar", "w", format=tarfile.PAX_FORMAT)
            assert tar is not None
            key = sample_key(m.name, used)
            _add(tar, f"{key}.{name.rpartition('.')[2].lower()}", data, m.mtime_ns)
            meta = {"name": m.name, "file": name, "lossy": m.kind == MemberKind.IMAGE, "size": m.original_size}
            _add(tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode(), m.mtime_ns)
            if progress:
                progress(m.name)
    finally:
        if tar is not None:
            tar.close()


def _path_under(root: Path, name: str) -> Path:
    validate_member_name(name)
    target = root.joinpath(*name.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


@contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A hidden temporary folder beside ``dest``, removed whatever happens."""
    from aezip.archive.pack import remove_tree

    parent = dest.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".aezip-tmp", dir=parent))
    try:
        yield stage
    finally:
        remove_tree(stage)


def _move_into(stage: Path, dest: Path) -> None:
    """Move the staged files into ``dest`` (one rename when ``dest`` does not exist)."""
    if not dest.exists():
        os.chmod(stage, 0o777 & ~_umask())
        os.rename(stage, dest)
        return
    for path in sorted(stage.rglob("*")):
        target = dest / path.relative_to(stage)
        if path.is_dir():
            target.mkdir(exist_ok=True)
        else:
            os.replace(path, target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_tar_input(path: Path) -> bool:
    """Whether ``aezip pack`` reads ``path`` as a tar to expand (a file named like a tar)."""
    return path.is_file() and path.name.lower().endswith(TAR_SUFFIXES)


def tar_stem(path: Path) -> str:
    """``shard-000.tar.gz`` → ``shard-000``."""
    name = path.name
    for suffix in TAR_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or "archive"
    return path.stem


@contextmanager
def expanded_tar(path: Path, near: Path | None = None) -> Iterator[tuple[Path, list[tuple[str, str]]]]:
    """Expand a tar (WebDataset shard or any tar of files) into a temporary folder for ``pack``.

    Yields the folder and the entries left out, as (name, why): links, devices and names aezip
    refuses (absolute, ``..``). The folder lives beside ``near`` (the archive being written, so
    it is on the same disk) or in the system's temporary folder, and is removed afterwards.
    """
    from aezip.archive.pack import remove_tree

    base = near.resolve().parent if near is not None and near.resolve().parent.is_dir() else None
    root = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".aezip-tmp", dir=base))
    skipped: list[tuple[str, str]] = []
    try:
        try:
            tar = tarfile.open(path, "r:*")
        except tarfile.TarError as exc:
            raise AezipError(f"{path}: not a readable tar ({exc})") from None
        with tar:
            for member in tar:
                name = member.name.removeprefix("./").rstrip("/")
                if not name or name == ".":
                    continue
                try:
                    validate_member_name(name)
                except UnsafePathError as exc:
                    skipped.append((member.name, str(exc)))
                    continue
                if member.isdir():
                    root.joinpath(*name.split("/")).mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    skipped.append((name, "not a regular file in the tar"))
                    continue
                target = _path_under(root, name)
                if target.exists():
                    skipped.append((name, "appears twice in the tar; the first copy is kept"))
                    continue
                source = tar.extractfile(member)
                assert source is not None
                with source, open(target, "wb") as out:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
                os.chmod(target, (member.mode & 0o777) or 0o644)
                os.utime(target, (member.mtime, member.mtime))
        yield root, skipped
    finally:
        remove_tree(root)
