"""``aezip pack SRC DST/ --shard-size 1GB``: a folder tree into shards and a manifest, in parallel, resumable.

1. **Plan** (driver): the sorted entries of SRC are cut into shards in order, a new shard
   starting when the next file would take the current one past ``shard_bytes`` input bytes or
   ``shard_images`` files. The plan depends only on the sorted names and sizes, so shard contents
   (and bytes) are the same whatever the number of jobs or the engine.
2. **Shards** (one task each, on any executor of :mod:`aezip.store.executors`): pack the shard's
   entries into ``DST/shard-NNNNN.aez`` through a temporary file renamed on success, one intra-op
   thread per task (so encoded bytes do not depend on the machine), and report its counts and sha256.
3. **Commit** (driver): ``DST/manifest.json`` is written last, atomically.

Resume: while a job runs, the driver keeps the records of finished shards in
``DST/.aezip-pack.json``. Running the same pack again keeps every shard whose inputs digest
(its entries' names, sizes, mtimes, modes and the codec settings) is unchanged and whose file still
has the recorded sha256; it redoes the others. ``append`` packs files not yet in the dataset into
new shards and leaves the existing ones untouched.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from aezip import __version__
from aezip.archive.container import ArchiveReader, MemberKind, validate_member_name
from aezip.archive.container import spec as container_spec
from aezip.archive.pack import ON_ERROR, Collected, Entry, Summary, check_inputs, collect, pack
from aezip.codec.codec import Codec
from aezip.codec.quality import QualityTarget
from aezip.errors import AezipError, UnsafePathError
from aezip.store.executors import Executor, LocalExecutor
from aezip.store.manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardedReader,
    ShardRecord,
    file_sha256,
    parse_manifest,
)
from aezip.store.remote import FolderStore, SourceFile, StorageOptions, download_source, is_url, list_source

JOURNAL_NAME = ".aezip-pack.json"
SHARD_PATTERN = re.compile(r"shard-\d{5,}\.aez")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)b?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``1GB`` → 10⁹, ``512MiB`` → 512·2²⁰, ``1000`` → 1000 bytes (k, M, G, T, P; B and i optional)."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 1GB, 512MiB, 1000000)")
    number, prefix, binary = match.groups()
    power = "kmgtp".find(prefix.lower()) + 1 if prefix else 0
    value = int(float(number) * (1024 if binary else 1000) ** power)
    if value < 1:
        raise ValueError(f"size must be at least one byte: {text!r}")
    return value


def shard_name(index: int) -> str:
    """``shard-00000.aez`` for shard 0."""
    return f"shard-{index:05d}.aez"


@dataclass(frozen=True)
class CodecSpec:
    """What a worker process needs to build the pack's codec."""

    quality: int = 6
    entropy: str = "auto"
    model: str | None = None
    device: str = "cpu"


@functools.lru_cache(maxsize=4)
def _codec(spec: CodecSpec) -> Codec:
    """One codec per spec per process (workers pack many shards with one loaded model)."""
    return Codec(quality=spec.quality, device=spec.device, model=spec.model, entropy=spec.entropy)


@dataclass(frozen=True)
class StoreEntry(Entry):
    """A file of a source tree at a URL: ``name`` under the tree's root, size and mtime from the listing."""

    size: int = 0
    mtime_ns: int = 0


def collect_store(url: str, storage_options: StorageOptions = None) -> Collected:
    """:func:`aezip.archive.pack.collect` for a tree at a URL: its files (object stores have no links or
    empty folders)."""
    found = Collected()
    for f in list_source(url, storage_options):
        try:
            validate_member_name(f.name)
        except UnsafePathError as exc:
            found.problems.append((f.name, str(exc)))
            continue
        found.entries.append(StoreEntry(f.name, Path(f.name), size=f.size, mtime_ns=f.mtime_ns))
    return found


@dataclass(frozen=True)
class ShardTask:
    """One shard to write: its entries (sorted), where, and how."""

    name: str
    folder: str
    src: str
    entries: tuple[Entry, ...]
    codec: CodecSpec
    on_error: str
    inputs: str
    embed_model: bool = True
    storage_options: dict | None = None
    target: QualityTarget | None = None


@dataclass
class ShardResult:
    """What a shard task reports: the manifest record, the inputs skipped or kept as is, those under a floor."""

    record: ShardRecord
    skipped: list[tuple[str, str]]
    stored: list[tuple[str, str]]
    below_floor: list[tuple[str, str]] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)  # files stored byte for byte, by reason label


def pack_shard(task: ShardTask) -> ShardResult:
    """Write one shard (temporary file renamed on success) and describe it; runs in any worker.

    Into an object store (``task.folder`` a URL), the shard is written to a local temporary folder
    first and uploaded whole when complete. From an object store (``task.src`` a URL), the shard's
    files are first copied into a local temporary folder (only this shard's).
    """
    if is_url(task.src):
        return _pack_shard_from_store(task)
    if not is_url(task.folder):
        return _pack_shard_at(task, Path(task.folder) / task.name)
    staging = Path(tempfile.mkdtemp(prefix=".aezip-shard-"))
    try:
        result = _pack_shard_at(task, staging / task.name)
        FolderStore(task.folder, task.storage_options).upload(staging / task.name, task.name)
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _pack_shard_from_store(task: ShardTask) -> ShardResult:
    """``pack_shard`` for a source tree at a URL: copy the shard's files here, then pack the copy."""
    files = [SourceFile(e.name, e.size, e.mtime_ns) for e in task.entries if isinstance(e, StoreEntry)]
    staging = Path(tempfile.mkdtemp(prefix=".aezip-src-"))
    try:
        download_source(task.src, files, staging, task.storage_options)
        entries = tuple(Entry(e.name, staging / e.name) for e in task.entries)
        return pack_shard(replace(task, src=str(staging), entries=entries))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _pack_shard_at(task: ShardTask, path: Path) -> ShardResult:
    from aezip.model.inference import one_thread

    with one_thread():
        summary = pack(
            Path(task.src),
            path,
            _codec(task.codec),
            files=Collected(entries=list(task.entries)),
            on_error=task.on_error,
            overwrite=True,
            jobs=1,
            embed_model=task.embed_model,
            target=task.target,
        )
    with ArchiveReader(path) as reader:
        names = [m.name for m in reader.members]
    record = ShardRecord(
        name=task.name,
        members=len(names),
        files=summary.files,
        images=summary.images,
        links=summary.links,
        folders=summary.folders,
        bytes_in=summary.bytes_in,
        bytes=summary.bytes_out,
        sha256=file_sha256(path),
        inputs=task.inputs,
        first=names[0] if names else "",
        last=names[-1] if names else "",
    )
    return ShardResult(record, summary.skipped, summary.stored, summary.below_floor, dict(summary.kept))


def kept_in_shard(location: str, storage_options: StorageOptions = None) -> Counter[str]:
    """The files a written shard stores byte for byte, by reason label, read from its index (for reused shards)."""
    from aezip.archive.reader import raw_reason
    from aezip.codec.imagefile import reason_label
    from aezip.store.remote import RemoteArchiveReader

    reader = RemoteArchiveReader(location, storage_options) if is_url(location) else ArchiveReader(location)
    with reader:
        return Counter(reason_label(raw_reason(m)) for m in reader.members if m.kind == MemberKind.RAW)


def plan(entries: list[Entry], sizes: list[int], shard_bytes: int | None, shard_images: int | None) -> list[list[int]]:
    """Entry positions per shard, in order: a new shard when the next file would pass either limit.

    Links and empty folders count no bytes and no files; a file larger than ``shard_bytes`` gets a shard of its own.
    """
    shards: list[list[int]] = []
    current: list[int] = []
    used = files = 0
    for i, entry in enumerate(entries):
        is_file = entry.kind == MemberKind.RAW
        full = (shard_images is not None and is_file and files >= shard_images) or (
            shard_bytes is not None and is_file and files and used + sizes[i] > shard_bytes
        )
        if current and full:
            shards.append(current)
            current, used, files = [], 0, 0
        current.append(i)
        used += sizes[i]
        files += is_file
    if current:
        shards.append(current)
    return shards


def _describe(entry: Entry) -> list[object]:
    """What a shard's inputs digest covers for one entry: name, kind, link target, size, mtime, mode."""
    if isinstance(entry, StoreEntry):
        return [entry.name, int(entry.kind), entry.target, entry.size, entry.mtime_ns, 0o644]
    try:
        st = os.lstat(entry.path)
    except OSError:
        return [entry.name, int(entry.kind), entry.target, -1, 0, 0]
    return [entry.name, int(entry.kind), entry.target, st.st_size, st.st_mtime_ns, st.st_mode & 0o7777]


def inputs_digest(settings: dict, entries: list[Entry]) -> str:
    """sha256 over the codec settings and every entry of a shard: equal digests mean the same shard bytes."""
    body = json.dumps({"settings": settings, "entries": [_describe(e) for e in entries]}, sort_keys=True)
    return hashlib.sha256(body.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class ShardedSummary:
    """The outcome of :func:`pack_sharded`: the merged summary and which shards were written or kept."""

    summary: Summary
    manifest: Manifest
    path: Path | str
    written: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # --append: the shards already in the dataset
    present: int = 0  # --append: files left out because the dataset already has them


def _read_manifest(store: FolderStore, name: str, allow_empty: bool) -> Manifest | None:
    data = store.read(name)
    return None if data is None else parse_manifest(data, store.location(name), allow_empty=allow_empty)


def _still_good(store: FolderStore, record: ShardRecord | None, inputs: str) -> bool:
    """Whether a recorded shard can be kept: same inputs digest, file of the recorded size and sha256."""
    if record is None or record.inputs != inputs:
        return False
    try:
        return store.size(record.name) == record.bytes and store.sha256(record.name) == record.sha256
    except OSError:
        return False


def settings_of(codec: Codec, spec: CodecSpec, on_error: str, target: QualityTarget | None = None) -> dict:
    """The settings a manifest records (and every shard's inputs digest covers); ``quality_target`` only
    with a quality floor, cap or ``--measure``."""
    from aezip.model.registry import model_name

    model_id = codec.model.model_id
    floors = {"quality_target": asdict(target)} if target is not None else {}
    return {
        **floors,
        "quality": spec.quality,
        "entropy": spec.entropy,
        "model": model_id.hex(),
        "model_name": model_name(model_id) or "",
        "on_error": on_error,
        "aezip": __version__,
        "archive_format": ".".join(map(str, container_spec.FORMAT_VERSION)),
    }


def pack_sharded(
    src: Path | str,
    dst: Path | str,
    spec: CodecSpec,
    *,
    shard_bytes: int | None = None,
    shard_images: int | None = None,
    executor: Executor | None = None,
    on_error: str = "fail",
    force: bool = False,
    append: bool = False,
    progress: Callable[[int], None] | None = None,
    files: Collected | None = None,
    embed_model: bool = True,
    storage_options: dict | None = None,
    target: QualityTarget | None = None,
) -> ShardedSummary:
    """Pack ``src`` into shards under ``dst`` and write ``dst/manifest.json`` last (see the module docstring).

    ``force`` redoes every shard and replaces a dataset packed from other inputs or settings;
    without it, such a dataset is refused. ``progress`` receives the number of files of each
    finished shard. ``embed_model`` and ``target`` (quality floor, cap, ``measure``) as for
    :func:`aezip.archive.pack.pack` (each shard then carries the model; the manifest records the target).
    ``dst`` may be an fsspec URL (``s3://bucket/ds``, with ``storage_options``): each shard is written
    locally, then uploaded whole; the manifest is uploaded last. ``src`` may be a URL too: the driver
    lists it, each shard task copies its own files to a local temporary folder and packs them there
    (image checks then happen per shard: with ``on_error="fail"`` a bad image stops its shard's task).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    store = FolderStore(dst, storage_options)
    if store.is_file_elsewhere():
        raise AezipError(f"{dst} exists and is not a folder")
    executor = executor or LocalExecutor(1)
    codec = _codec(spec)
    settings = settings_of(codec, spec, on_error, target)
    manifest_path = store.location(MANIFEST_NAME)
    old_manifest = _read_manifest(store, MANIFEST_NAME, allow_empty=False)
    committed = old_manifest.shards if old_manifest else []
    if append and old_manifest is None:
        raise AezipError(f"--append needs an existing dataset: {manifest_path} not found")
    if append and old_manifest is not None and shard_bytes is None and shard_images is None:
        shard_bytes, shard_images = old_manifest.settings.get("shard_size"), old_manifest.settings.get("shard_images")
    if shard_bytes is None and shard_images is None:
        raise AezipError("give a shard size (--shard-size) or a number of files per shard (--shard-images)")

    from_store = is_url(src)
    if files is not None:
        found = files
    else:
        found = collect_store(str(src), storage_options) if from_store else collect(Path(src))
    if not store.url and not from_store:
        found.entries = _outside(found.entries, Path(src), Path(dst))
    summary = Summary(skipped=list(found.skipped))
    # Files in a store are checked where each shard is packed (opening them here would download them all).
    failures = [(name, why, False) for name, why in found.problems] if from_store else check_inputs(found)
    if failures and on_error == "fail":
        first, why, _ = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise AezipError(f"{first}: {why}{more}; nothing was written (see --on-error)")
    storable = {name for name, _, ok in failures if ok and on_error == "store"}
    for name, why, _ in failures:
        (summary.stored if name in storable else summary.skipped).append((name, why))
    left_out = {name for name, _, _ in failures} - storable
    entries = [e for e in found.entries if e.name not in left_out]

    kept: list[ShardRecord] = []
    present = 0
    if append:
        assert old_manifest is not None
        _check_same_settings(old_manifest.settings, settings)
        kept = old_manifest.shards
        with ShardedReader(manifest_path, storage_options) as reader:
            existing = [(m.name, m.kind) for m in reader.members]
        have = {name for name, _ in existing}
        present = sum(e.name in have for e in entries if e.kind == MemberKind.RAW)
        entries = [e for e in entries if e.name not in have]
        try:
            container_spec.check_tree(existing + [(e.name, e.kind) for e in entries])
        except UnsafePathError as exc:
            raise AezipError(f"cannot append: {exc}") from None
        if not entries:
            raise AezipError(f"nothing to append: every file of {src} is already in {dst}")
    elif not entries:
        raise AezipError(f"nothing to pack in {src}")

    sizes = [_size(e) for e in entries]
    groups = plan(entries, sizes, shard_bytes, shard_images)
    start = len(kept)
    tasks = []
    for k, group in enumerate(groups):
        chosen = [entries[i] for i in group]
        tasks.append(
            ShardTask(
                shard_name(start + k),
                str(dst),
                str(src),
                tuple(chosen),
                spec,
                on_error,
                inputs_digest(settings, chosen),
                embed_model,
                storage_options,
                target,
            )
        )
    settings = {**settings, "shard_size": shard_bytes, "shard_images": shard_images}

    journal = _read_manifest(store, JOURNAL_NAME, allow_empty=True)
    known = {r.name: r for r in journal.shards} if journal else {}
    if not append:
        if committed and not force:
            pairs = zip(committed, tasks, strict=False)
            changed = len(committed) != len(tasks) or any(r.inputs != t.inputs for r, t in pairs)
            if changed:
                raise AezipError(
                    f"{manifest_path} describes a dataset packed from other files or settings; "
                    "use --force to replace it or --append to add new files"
                )
        if not committed and not known and not force:
            foreign = [n for n in store.names() if SHARD_PATTERN.fullmatch(n)]
            if foreign:
                raise AezipError(f"{dst} already holds {foreign[0]} but no manifest; use --force to replace it")
        known.update({r.name: r for r in committed})
    if force:
        known = {}

    store.make()
    done: dict[str, ShardRecord] = {}
    reused: list[str] = []
    for task in tasks:
        record = known.get(task.name)
        if _still_good(store, record, task.inputs):
            assert record is not None
            done[task.name] = record
            reused.append(task.name)
            summary.kept.update(kept_in_shard(store.location(task.name), storage_options))
            if progress:
                progress(record.files)
    _write_journal(store, kept, done, settings)
    todo = [t for t in tasks if t.name not in done]
    written: list[str] = []
    for i, result in executor.run(pack_shard, todo):
        done[todo[i].name] = result.record
        written.append(todo[i].name)
        summary.skipped += result.skipped
        summary.below_floor += result.below_floor
        summary.kept.update(result.kept)
        summary.stored += [s for s in result.stored if s[0] not in {n for n, _ in summary.stored}]
        _write_journal(store, kept, done, settings)
        if progress:
            progress(result.record.files)

    manifest = Manifest(kept + [done[t.name] for t in tasks], settings, __version__)
    store.write(MANIFEST_NAME, manifest.to_json())
    store.remove(JOURNAL_NAME)
    names = {s.name for s in manifest.shards}
    for stale in store.names():
        if SHARD_PATTERN.fullmatch(stale) and stale not in names:
            store.remove(stale)
    for record in manifest.shards[len(kept) :]:
        summary.files += record.files
        summary.images += record.images
        summary.links += record.links
        summary.folders += record.folders
        summary.bytes_in += record.bytes_in
        summary.bytes_out += record.bytes
    written.sort()
    return ShardedSummary(summary, manifest, manifest_path, written, reused, [r.name for r in kept], present)


def _outside(entries: list[Entry], src: Path, dst: Path) -> list[Entry]:
    """``entries`` less the dataset folder itself when it lies inside the source folder."""
    try:
        inner = dst.resolve().relative_to(src.resolve()).as_posix()
    except ValueError:
        return entries
    if inner == ".":
        raise AezipError(f"{dst} is the source folder; write the dataset somewhere else")
    return [e for e in entries if e.name != inner and not e.name.startswith(inner + "/")]


def _size(entry: Entry) -> int:
    if entry.kind != MemberKind.RAW:
        return 0
    if isinstance(entry, StoreEntry):
        return entry.size
    try:
        return os.stat(entry.path).st_size
    except OSError:
        return 0


def _check_same_settings(old: dict, new: dict) -> None:
    for key in ("quality", "entropy", "model", "on_error", "quality_target"):
        if old.get(key) != new.get(key):
            raise AezipError(f"cannot append with {key} {new.get(key)!r}: the dataset was packed with {old.get(key)!r}")


def _write_journal(store: FolderStore, kept: list[ShardRecord], done: dict[str, ShardRecord], settings: dict) -> None:
    """Record the finished shards, so a new run after a crash keeps them."""
    records = kept + [done[name] for name in sorted(done)]
    store.write(JOURNAL_NAME, Manifest(records, settings, __version__).to_json())
