"""Folder tree ⇄ archive: what ``aezip pack``, ``unpack`` and ``verify`` do.

Both directions are all-or-nothing. ``pack`` first walks the tree and opens every input (and
decodes every image the model will code), so a bad file is reported before any encoding; it then writes the
archive through a temporary file that replaces the destination only when complete (and, unless
asked to, never replaces an existing file). ``unpack`` checks the destination for files it would
replace, restores into a hidden staging folder beside the destination and moves files into place
only after every member has decoded and passed its checks, so a corrupt archive never leaves a
partial tree behind.

Link policy (also in README and docs/FORMAT.md): a symbolic link is stored as a link (its target
text), never followed, when its target stays inside the source folder; links that point outside
it (absolute, or with too many ``..``) are skipped and reported, as are sockets, FIFOs and device
files. Empty folders are kept.
"""

from __future__ import annotations

import errno
import functools
import os
import posixpath
import shutil
import stat
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from aezip.archive.container import ArchiveWriter, MemberInfo, MemberKind, validate_member_name
from aezip.archive.container.spec import validate_link_target
from aezip.archive.parallel import ordered_map
from aezip.archive.reader import (
    Archive,
    EncodedFile,
    MemberPlan,
    add_context,
    add_dir,
    add_link,
    add_model,
    encode_member,
    iter_raw,
    output_name,
    raw_reason,
    render,
    write_member,
)
from aezip.codec.codec import Codec, parse_header
from aezip.codec.imagefile import (
    DEFAULT_JPEG_QUALITY,
    MAX_CODED_PIXELS,
    NOT_AN_IMAGE,
    identify,
    is_image_name,
    reason_label,
)
from aezip.codec.quality import QualityTarget
from aezip.entropy import METHODS
from aezip.errors import AezipError, UnsafePathError, UnsupportedImageError
from aezip.model.registry import model_name
from aezip.model.runtime import release_freed_memory

Progress = Callable[[str], None]
#: Image pixels being encoded or decoded at once across all jobs (one larger image always may):
#: bounds memory whatever ``jobs`` is.
PIXELS_IN_FLIGHT = MAX_CODED_PIXELS
ON_ERROR = ("fail", "skip", "store")
EXISTING = ("refuse", "replace", "skip")


@dataclass(frozen=True)
class Entry:
    """One thing found under the source folder: a file (RAW kind: image or data), a link or an empty folder."""

    name: str
    path: Path
    kind: MemberKind = MemberKind.RAW
    target: str = ""


@dataclass
class Collected:
    """What :func:`collect` found: entries to pack, things left out by policy, and inputs that failed."""

    entries: list[Entry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, why): link/special-file policy
    problems: list[tuple[str, str]] = field(default_factory=list)  # (name, why): unreadable, bad name

    @property
    def files(self) -> int:
        return sum(e.kind == MemberKind.RAW for e in self.entries)


@dataclass
class Summary:
    """Counts, byte totals and the names left out or kept as is, of a pack, unpack or verify."""

    files: int = 0
    images: int = 0
    links: int = 0
    folders: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    members: list[MemberPlan] = field(default_factory=list)
    embedded_models: list[str] = field(default_factory=list)  # sha256 of models stored in the archive
    below_floor: list[tuple[str, str]] = field(default_factory=list)  # (name, what) under --min-psnr
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, why) not in the output
    stored: list[tuple[str, str]] = field(default_factory=list)  # (name, why) unreadable images kept byte for byte
    kept: Counter[str] = field(default_factory=Counter)  # files stored byte for byte, by reason label

    @property
    def ratio(self) -> float:
        return self.bytes_in / self.bytes_out if self.bytes_out else 0.0

    def count(self, kind: MemberKind) -> None:
        """Count one member of ``kind``."""
        if kind == MemberKind.LINK:
            self.links += 1
        elif kind == MemberKind.DIR:
            self.folders += 1
        else:
            self.files += 1
            self.images += kind == MemberKind.IMAGE


def _link_entry(name: str, path: Path) -> tuple[Entry | None, str]:
    """A LINK entry for the symlink at ``path``, or None and why it is skipped."""
    target = os.readlink(path)
    if target.startswith("/"):
        return None, f"absolute link to {target}"
    clean = "/".join(p for p in target.split("/") if p not in ("", "."))  # a//b and ./a mean the same
    try:
        return Entry(name, path, MemberKind.LINK, validate_link_target(name, clean)), ""
    except UnsafePathError:
        return None, f"link to {target} leads outside the source folder"


def collect(src: Path, exclude: Path | None = None) -> Collected:
    """Every file, link and empty folder under ``src`` (or ``src`` itself), sorted by name.

    Links are never followed (see the module docstring for the policy). ``exclude`` (the archive
    being written) and its temporary files are left out silently.
    """
    found = Collected()
    if src.is_file():
        found.entries.append(Entry(src.name, src))
        return found
    if not src.is_dir():
        raise AezipError(f"no such file or folder: {src}")
    skip = exclude.resolve() if exclude else None
    folders: list[tuple[str, Path]] = []

    def walk_error(exc: OSError) -> None:
        rel = Path(exc.filename or src).relative_to(src).as_posix() if exc.filename else "."
        found.problems.append((rel, f"cannot list folder: {exc.strerror or exc}"))

    for root, dirs, files in os.walk(src, onerror=walk_error):
        dirs.sort()
        for fname in sorted(dirs + files):
            path = Path(root) / fname
            name = path.relative_to(src).as_posix()
            try:
                st = os.lstat(path)
            except OSError as exc:
                found.problems.append((name, exc.strerror or str(exc)))
                continue
            try:
                validate_member_name(name)
            except UnsafePathError as exc:
                found.problems.append((name, str(exc)))
                continue
            if stat.S_ISLNK(st.st_mode):
                entry, why = _link_entry(name, path)
                found.entries.append(entry) if entry else found.skipped.append((name, why))
            elif stat.S_ISDIR(st.st_mode):
                folders.append((name, path))
            elif stat.S_ISREG(st.st_mode):
                if skip and (path.resolve() == skip or (fname.startswith(f".{skip.name}.") and fname.endswith(".tmp"))):
                    continue
                found.entries.append(Entry(name, path))
            else:
                found.skipped.append((name, "not a regular file, link or folder"))
    parents = {posixpath.dirname(e.name) for e in found.entries} | {posixpath.dirname(f) for f, _ in folders}
    used = {prefix for name in parents for prefix in _prefixes(name)}  # folders with something under them
    found.entries += [Entry(name, path, MemberKind.DIR) for name, path in folders if name not in used]
    found.entries.sort(key=lambda e: e.name)
    return found


def _prefixes(folder: str) -> Iterator[str]:
    """``a/b/c`` → ``a``, ``a/b``, ``a/b/c`` (nothing for the root ``""``)."""
    parts = folder.split("/") if folder else []
    for i in range(1, len(parts) + 1):
        yield "/".join(parts[:i])


def check_inputs(found: Collected) -> list[tuple[str, str, bool]]:
    """Open every file and read every image (in full when the model will code it: a truncated image
    is found here, not after everything before it is encoded); (name, why, storable) per failure.

    ``storable`` is True when the file can be read but is not a readable image (``--on-error store``
    keeps it byte for byte), False when the file itself cannot be read or named.
    """
    failures = [(name, why, False) for name, why in found.problems]
    for entry in found.entries:
        if entry.kind != MemberKind.RAW:
            continue
        try:
            if is_image_name(entry.name):
                identify(entry.path, entry.name)
            else:
                with open(entry.path, "rb"):
                    pass
        except UnsupportedImageError as exc:
            failures.append((entry.name, str(exc).removeprefix(entry.name + ": "), True))
        except OSError as exc:
            failures.append((entry.name, f"cannot read ({exc.strerror or exc})", False))
    return failures


def _too_many(problems: list[tuple[str, str]], what: str) -> str:
    first, why = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{first}: {why}{more}; {what}"


def pack(
    src: Path,
    out: Path,
    codec: Codec,
    progress: Progress | None = None,
    files: Collected | None = None,
    *,
    on_error: str = "fail",
    overwrite: bool = True,
    jobs: int = 1,
    embed_model: bool = True,
    target: QualityTarget | None = None,
) -> Summary:
    """Pack a folder (or one file) into ``out``; all or nothing.

    Every input is opened and every image identified before anything is encoded. ``on_error``
    says what happens to an input that cannot be read: ``fail`` (the default) stops with an error,
    ``skip`` leaves it out, ``store`` keeps an unreadable image byte for byte (files that cannot be
    read at all are skipped); the summary names them. Without ``overwrite`` an existing ``out`` is
    never replaced. ``files`` is :func:`collect`'s result when the caller already has it.
    ``jobs`` files are encoded at once, one intra-op thread each; the archive's bytes do not depend on it.
    When images were coded with a model aezip does not ship, its file is stored in the archive
    (unless ``embed_model`` is false), with its context tables when an image was coded ``ans-ctx``,
    so the archive decodes on any machine with aezip.
    ``target`` chooses the quality per image (PSNR floor, bpp cap) and records what was measured.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if not overwrite and os.path.lexists(out):
        raise AezipError(f"{out} already exists (use --force to overwrite it)")
    found = collect(src, exclude=out) if files is None else files
    summary = Summary(skipped=list(found.skipped))
    failures = check_inputs(found)
    if failures and on_error == "fail":
        raise AezipError(_too_many([(n, w) for n, w, _ in failures], "nothing was written (see --on-error)"))
    storable = {name for name, _, ok in failures if ok and on_error == "store"}
    for name, why, _ in failures:
        if name in storable:
            summary.stored.append((name, why))
        else:
            summary.skipped.append((name, why))
    left_out = {name for name, _, _ in failures} - storable
    entries = [e for e in found.entries if e.name not in left_out]
    if not entries:
        raise AezipError(f"nothing to pack in {src}")
    uses_context = False  # an ans-ctx stream needs the model's context tables to decode
    with ArchiveWriter(out, overwrite=overwrite) as writer, _threads_for(jobs):
        work = functools.partial(_encode_entry, codec=codec, on_error=on_error, target=target)
        for entry, result in ordered_map(work, entries, jobs, _input_pixels, PIXELS_IN_FLIGHT):
            value = result[1]
            if isinstance(value, EncodedFile) and value.kind == MemberKind.IMAGE:
                uses_context |= parse_header(value.payload)[0].entropy == METHODS["ans-ctx"]
            plan = _write_entry(writer, entry, result, summary)
            if plan is not None:
                summary.members.append(plan)
                summary.count(plan.kind)
            if progress:
                progress(entry.name)
        if embed_model and summary.images and model_name(codec.model.model_id) is None:
            add_model(writer, codec.model)
            summary.embedded_models.append(codec.model.sha256)
            if uses_context:
                add_context(writer, codec.model)
    summary.bytes_in = sum(p.original_size for p in summary.members)
    summary.bytes_out = out.stat().st_size
    return summary


@contextmanager
def _threads_for(jobs: int) -> Iterator[None]:
    """One intra-op thread per job when images are encoded in parallel (more only compete for cores)."""
    if jobs > 1:
        from aezip.model.inference import one_thread

        with one_thread():
            yield
    else:
        yield


def _input_pixels(entry: Entry) -> int:
    """Pixels of an input image from its header (0 for anything else): the memory it will take to code."""
    if entry.kind != MemberKind.RAW or not is_image_name(entry.name):
        return 0
    try:
        with Image.open(entry.path) as im:
            return im.width * im.height
    except Exception:  # noqa: BLE001 - unreadable files are handled by the encoder, this is only an estimate
        return 0


#: What a worker hands back for one entry: a member to write, or why it is skipped.
_Encoded = tuple[str, object, int, int]


def _encode_entry(
    entry: Entry, codec: Codec, on_error: str, target: QualityTarget | None = None
) -> tuple[Entry, _Encoded]:
    """The slow part of adding one entry, safe to run in a worker thread.

    Returns ``(kind, value, mode, mtime_ns)`` with kind ``link`` (value: target), ``dir``,
    ``file`` (value: :class:`EncodedFile`) or ``skip`` (value: why). An input that fails only now
    (damaged past its header) follows ``on_error``.
    """
    try:
        st = os.lstat(entry.path)
        if entry.kind == MemberKind.LINK:
            return entry, ("link", entry.target, 0, st.st_mtime_ns)
        if entry.kind == MemberKind.DIR:
            return entry, ("dir", None, st.st_mode & 0o777, st.st_mtime_ns)
        data = entry.path.read_bytes()
        st = entry.path.stat()
    except OSError as exc:
        if on_error == "fail":
            raise AezipError(f"cannot read {entry.path}: {exc.strerror or exc}") from None
        return entry, ("skip", f"cannot read ({exc.strerror or exc})", 0, 0)
    try:
        encoded = encode_member(entry.name, data, codec, keep_unreadable=on_error == "store", target=target)
    except UnsupportedImageError as exc:
        if on_error == "fail":
            raise
        return entry, ("skip", str(exc).removeprefix(entry.name + ": "), 0, 0)
    finally:
        release_freed_memory()  # an image's buffers are free now: see aezip.model.runtime
    return entry, ("file", encoded, st.st_mode & 0o777, st.st_mtime_ns)


def _write_entry(writer: ArchiveWriter, entry: Entry, result: _Encoded, summary: Summary) -> MemberPlan | None:
    """Write one encoded entry to the archive, in order, and note skipped or stored-as-is inputs."""
    kind, value, mode, mtime_ns = result
    if kind == "skip":
        summary.skipped.append((entry.name, str(value)))
        return None
    if kind == "link":
        return add_link(writer, entry.name, str(value), mtime_ns=mtime_ns)
    if kind == "dir":
        return add_dir(writer, entry.name, mode=mode, mtime_ns=mtime_ns)
    assert isinstance(value, EncodedFile)
    plan = write_member(writer, value, mode=mode, mtime_ns=mtime_ns)
    if plan.kind == MemberKind.RAW:
        summary.kept[reason_label(plan.note.removeprefix("lossless: ")) if plan.note != "data" else NOT_AN_IMAGE] += 1
    if value.stats is not None and value.stats.below_floor:
        summary.below_floor.append((entry.name, f"{value.stats.psnr:.2f} dB at quality {value.stats.quality}"))
    elif value.note.startswith("lossless: below the quality floor"):
        summary.below_floor.append((entry.name, "stored losslessly"))
    unreadable = "lossless: unreadable image: "
    if plan.note.startswith(unreadable) and all(name != entry.name for name, _ in summary.stored):
        summary.stored.append((entry.name, plan.note.removeprefix(unreadable)))  # damaged past its header
    return plan


def _target(root: Path, relative: str, made: set[Path] | None = None) -> Path:
    """Path under ``root`` for a member, creating its folders one by one and refusing any escape."""
    validate_member_name(relative)
    parts = relative.split("/")
    folder = root
    for part in parts[:-1]:
        folder = folder / part
        if made is not None and folder in made:
            continue
        try:
            os.mkdir(folder)
        except FileExistsError:
            pass
        if made is not None:
            made.add(folder)
    if not folder.resolve().is_relative_to(root.resolve()):
        raise UnsafePathError(f"{relative}: would be written outside the destination")
    return folder / parts[-1]


def _decoded_files(
    archive: Archive,
    fmt: str,
    members: list[MemberInfo],
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    jobs: int = 1,
) -> Iterator[tuple[MemberInfo, Iterator[bytes] | bytes | str | None]]:
    """Each member, in order, with what it restores to.

    Bytes for an image, a chunk stream for a RAW member, a target for a LINK, None for a DIR.

    Payloads are read (and checksummed) in the calling thread, in archive order; images are decoded
    and rendered by ``jobs`` worker threads, one image each, at most :data:`PIXELS_IN_FLIGHT` at once.
    """

    def payloads() -> Iterator[tuple[MemberInfo, bytes | None]]:
        for group in _read_groups(members):
            wanted = [m.name for m in group if m.kind in (MemberKind.IMAGE, MemberKind.RAW)]
            read = dict(zip(wanted, archive.payloads(wanted), strict=True))
            for m in group:
                yield m, read.get(m.name)

    def restore(item: tuple[MemberInfo, bytes | None]) -> tuple[MemberInfo, Iterator[bytes] | bytes | str | None]:
        m, payload = item
        if m.kind == MemberKind.IMAGE:
            assert payload is not None
            try:
                return m, render(m, archive.codec.decode_many([payload])[0], fmt, jpeg_quality)
            finally:
                release_freed_memory()
        if m.kind == MemberKind.LINK:
            return m, archive.link_target(m.name)
        if m.kind == MemberKind.DIR:
            return m, None
        assert payload is not None
        raw_reason(m)  # its metadata is checked like every other member's
        return m, iter_raw(payload, m.original_size, m.name)

    def pixels(item: tuple[MemberInfo, bytes | None]) -> int:
        m, payload = item
        if m.kind != MemberKind.IMAGE or payload is None:
            return 0
        header, _ = parse_header(payload)
        return header.width * header.height

    if jobs > 1:
        archive.codec  # noqa: B018 - create the decoder once, before the workers share it
    # Each decode pins its own threads (one BLAS or intra-op thread per image on the CPU).
    yield from ordered_map(restore, payloads(), jobs, pixels, PIXELS_IN_FLIGHT)

    archive.embedded_models()  # every MODEL and CONTEXT member is checked, needed by an image or not

#: Payloads read together by unpack and verify (one range request per run at a URL): at most this many
#: members and, past the first, this many bytes.
READ_GROUP_MEMBERS = 64
READ_GROUP_BYTES = 8 << 20


def _read_groups(members: list[MemberInfo]) -> Iterator[list[MemberInfo]]:
    """``members`` in order, cut into groups whose payloads are read at once (memory stays bounded)."""
    group: list[MemberInfo] = []
    held = 0
    for m in members:
        if group and (len(group) >= READ_GROUP_MEMBERS or held + m.length > READ_GROUP_BYTES):
            yield group
            group, held = [], 0
        group.append(m)
        held += m.length
    if group:
        yield group


def _conflicts(archive: Archive, dest: Path, fmt: str) -> tuple[list[str], list[str]]:
    """(member outputs that exist in ``dest`` and would be replaced, outputs that can never be written there)."""
    replace: list[str] = []
    blocked: list[str] = []
    if not dest.exists():
        return replace, blocked
    checked: set[str] = set()
    for m in archive.members:
        name = output_name(m, fmt)
        for folder in _prefixes(posixpath.dirname(name)):
            if folder not in checked:
                checked.add(folder)
                path = dest / folder
                if os.path.lexists(path) and not path.is_dir():
                    blocked.append(f"{folder} exists and is not a folder")
                elif path.is_symlink() and not path.resolve().is_relative_to(dest.resolve()):
                    blocked.append(f"{folder} is a link that leads outside {dest}")
        path = dest / name
        if not os.path.lexists(path):
            continue
        is_dir = path.is_dir() and not path.is_symlink()
        if m.kind == MemberKind.DIR:
            if not is_dir:
                blocked.append(f"{name} exists and is not a folder")
        elif is_dir:
            blocked.append(f"{name} is a folder")
        else:
            replace.append(name)
    return replace, blocked


def _names(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def unpack(
    archive: Archive,
    dest: Path,
    fmt: str = "original",
    progress: Progress | None = None,
    *,
    existing: str = "refuse",
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    jobs: int = 1,
) -> Summary:
    """Restore every member under ``dest``; all or nothing (see module docstring).

    ``existing`` says what to do when members would replace files already in ``dest``:
    ``refuse`` (the default: an error naming the first few, nothing written), ``replace`` them, or
    ``skip`` those members. A folder is never replaced by a file, nor a file by a folder.
    ``jobs`` images are decoded at once (one intra-op thread each); the files written do not depend on it.
    """
    if existing not in EXISTING:
        raise ValueError(f"existing must be one of {EXISTING}, got {existing!r}")
    names = [output_name(m, fmt) for m in archive.members]
    if len(set(names)) != len(names):
        raise AezipError("two members would be restored to the same file name; use --format original")
    if dest.exists() and not dest.is_dir():
        raise AezipError(f"destination exists and is not a folder: {dest}")
    replace, blocked = _conflicts(archive, dest, fmt)
    if blocked:
        raise AezipError(f"cannot restore into {dest}: {_names(blocked)}")
    if replace and existing == "refuse":
        raise AezipError(
            f"{len(replace)} file{'s' if len(replace) != 1 else ''} would be replaced in {dest}: {_names(replace)}; "
            "use --force to replace or --skip-existing to keep them"
        )
    keep = set(replace) if existing == "skip" else set()
    members = [m for m in archive.members if output_name(m, fmt) not in keep]
    summary = Summary(skipped=[(name, "exists") for name in replace if name in keep])
    dest_parent = dest.resolve().parent
    dest_parent.mkdir(parents=True, exist_ok=True)
    staging: Path | None = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".aezip-tmp", dir=dest_parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        made: set[Path] = set()
        folders: list[tuple[Path, MemberInfo]] = []
        for info, content in _decoded_files(archive, fmt, members, jpeg_quality, jobs):
            rel = output_name(info, fmt)
            try:
                written = _restore(_target(staging, rel, made), info, content, folders)
            except OSError as exc:
                raise OSError(exc.errno or errno.EIO, exc.strerror or str(exc), str(dest / rel)) from None
            summary.count(info.kind)
            summary.bytes_out += written
            if progress:
                progress(info.name)
        _set_folder_times(folders)
        _commit(staging, dest, [output_name(m, fmt) for m in members], existing)
    finally:
        if staging is not None:
            remove_tree(staging)
    summary.bytes_in = archive.stored_bytes
    return summary


def walk_tree(root: Path) -> list[Path]:
    """Every path under ``root``, parents before children, without recursion (names may be 1,000 folders deep)."""
    found: list[Path] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            path = Path(entry.path)
            found.append(path)
            if entry.is_dir(follow_symlinks=False):
                stack.append(path)
    return found


def remove_tree(root: Path) -> None:
    """Delete ``root`` and everything under it, best effort, without recursion; links are removed, not followed."""
    if not os.path.lexists(root):
        return
    for path in reversed([root, *walk_tree(root)]):
        try:
            if path.is_dir() and not path.is_symlink():
                os.rmdir(path)
            else:
                os.unlink(path)
        except OSError:
            pass


def _restore(target: Path, info: MemberInfo, content: Iterator[bytes] | bytes | str | None, folders: list) -> int:
    """Write one member at ``target``; returns the bytes written."""
    if info.kind == MemberKind.DIR:
        os.makedirs(target, exist_ok=True)
        folders.append((target, info))
        return 0
    if info.kind == MemberKind.LINK:
        assert isinstance(content, str)
        os.symlink(content, target)
        if info.mtime_ns and os.utime in os.supports_follow_symlinks:
            os.utime(target, ns=(info.mtime_ns, info.mtime_ns), follow_symlinks=False)
        return 0
    written = 0
    with open(target, "wb") as fh:
        if isinstance(content, bytes):
            fh.write(content)
            written = len(content)
        else:
            assert content is not None and not isinstance(content, str)
            for piece in content:
                fh.write(piece)
                written += len(piece)
    os.chmod(target, info.mode & 0o777 or 0o644)
    if info.mtime_ns:
        os.utime(target, ns=(info.mtime_ns, info.mtime_ns))
    return written


def _set_folder_times(folders: list[tuple[Path, MemberInfo]]) -> None:
    """Give restored folders their mode and mtime, deepest first (after their contents are written)."""
    for path, info in reversed(folders):
        os.chmod(path, info.mode & 0o777 or 0o755)
        if info.mtime_ns:
            os.utime(path, ns=(info.mtime_ns, info.mtime_ns))


def _commit(staging: Path, dest: Path, names: list[str], existing: str) -> None:
    """Move the staged members into ``dest`` (one rename when ``dest`` does not exist yet)."""
    if not dest.exists():
        os.rename(staging, dest)
        return
    made: set[Path] = set()
    for rel in names:
        src = staging / rel
        target = _target(dest, rel, made)
        if src.is_dir() and not src.is_symlink():
            if not target.is_dir():
                os.mkdir(target)
                shutil.copystat(src, target)
            continue
        if os.path.lexists(target) and existing == "skip":
            continue
        os.replace(src, target)


def verify(archive: Archive, progress: Progress | None = None, jobs: int = 1) -> Summary:
    """Check every checksum and that every member restores; raises on the first failure.

    Each payload's crc32 is checked as it is read (``ArchiveReader.read_payload``); RAW members
    also pass zstd's content checksum, links their target rules, images their metadata checks.
    """
    summary = Summary()
    for info, content in _decoded_files(archive, "original", archive.members, jobs=jobs):
        if isinstance(content, bytes):
            size = len(content)
        elif content is None or isinstance(content, str):
            size = 0
        else:
            size = sum(len(c) for c in content)
        summary.count(info.kind)
        summary.bytes_out += size
        if progress:
            progress(info.name)
    return summary
