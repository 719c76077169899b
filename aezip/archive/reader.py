"""Files ⇄ archive members: the layer between the container and the folder-level commands.

An image file the model can code becomes an IMAGE member (an image stream, plus JSON metadata
with the original format, mode and EXIF). Every other file, and every image the model must not
touch, becomes a RAW member: the original bytes in a zstd frame with a content checksum.

``Archive`` (returned by :func:`aezip.open`) reads members back by name, with random access.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import zstandard
from PIL import Image

from aezip.archive.container import ArchiveReader, ArchiveWriter, MemberInfo, MemberKind
from aezip.archive.container.spec import HIDDEN_KINDS
from aezip.codec.codec import Box, Codec, Decoded, check_box, parse_header
from aezip.codec.imagefile import (
    DEFAULT_JPEG_QUALITY,
    MAX_ICC_BYTES,
    check_file_meta,
    check_raw_meta,
    encode_file,
    examine,
    is_image_name,
    open_image,
    prepare,
)
from aezip.codec.quality import BelowFloorError, ImageStats, QualityTarget, encode_to_target, stats_from_meta
from aezip.entropy.safetensors_io import read_safetensors
from aezip.entropy.zstd_packer import decompressor
from aezip.errors import AezipError, CorruptArchiveError, ModelError, UnsupportedImageError
from aezip.model.side_files import attach_context, context_file_bytes
from aezip.model.weights import LoadedModel, model_from_bytes

RAW_LEVEL = 10
#: Largest member metadata parsed as JSON (aezip writes well under 200 KiB: format, mode, EXIF).
MAX_META_BYTES = 1 << 20
_CHUNK = 1 << 20
_local = threading.local()


def _raw_compressor() -> zstandard.ZstdCompressor:
    """This thread's compressor for RAW members (zstd contexts must not be shared between threads)."""
    if not hasattr(_local, "compressor"):
        _local.compressor = zstandard.ZstdCompressor(level=RAW_LEVEL, write_checksum=True, write_content_size=True)
    return _local.compressor


FORMATS = ("original", "png")


@dataclass(frozen=True)
class MemberPlan:
    """What :func:`add_file` decided for one file; used for the pack summary."""

    name: str
    kind: MemberKind
    original_size: int
    stored_size: int
    note: str


@dataclass(frozen=True)
class EncodedFile:
    """A file turned into a member's payload and metadata, ready to be written (see :func:`encode_member`)."""

    name: str
    kind: MemberKind
    payload: bytes
    metadata: bytes
    original_size: int
    note: str
    stats: ImageStats | None = None


def encode_member(
    name: str, data: bytes, codec: Codec, keep_unreadable: bool = False, target: QualityTarget | None = None
) -> EncodedFile:
    """Decide IMAGE or RAW for one file's bytes and build its payload: the slow, parallel part of packing.

    With ``target`` the quality is chosen per image and the measured PSNR and bpp are recorded in
    the member metadata (``stats``); an image below the floor follows ``target.below_floor``.

    An image file Pillow cannot read raises UnsupportedImageError, or with ``keep_unreadable`` is
    stored losslessly like any other file (its note then says why).
    """
    note = "data"
    if is_image_name(name):
        try:
            im, reason = examine(data, name)  # pixels decoded only when the model codes the image
        except UnsupportedImageError as exc:
            if not keep_unreadable:
                raise
            im, reason = None, f"unreadable image: {str(exc).removeprefix(name + ': ')}"
        if im is not None and reason is None:
            prep = prepare(im)
            del im
            if target is None:
                payload = codec.encode_prepared(prep)
                meta = json.dumps(prep.file_meta, sort_keys=True).encode()
                return EncodedFile(
                    name, MemberKind.IMAGE, payload, meta, len(data), f"q{codec.quality} {codec.entropy}"
                )
            try:
                payload, stats = encode_to_target(codec, prep, target)
            except BelowFloorError as exc:
                if target.below_floor == "fail":
                    raise AezipError(f"{name}: {exc} (see --below-floor)") from None
                reason = f"below the quality floor: {exc}"
            else:
                meta = json.dumps({**prep.file_meta, "stats": stats.to_meta()}, sort_keys=True).encode()
                note = f"q{stats.quality} {codec.entropy}, {stats.psnr:.2f} dB"
                return EncodedFile(name, MemberKind.IMAGE, payload, meta, len(data), note, stats)
        note = f"lossless: {reason}"
    payload = _raw_compressor().compress(data)
    meta = json.dumps({"lossless": note[10:]}).encode() if note != "data" else b""
    return EncodedFile(name, MemberKind.RAW, payload, meta, len(data), note)


def write_member(writer: ArchiveWriter, encoded: EncodedFile, mode: int = 0o644, mtime_ns: int = 0) -> MemberPlan:
    """Append an :class:`EncodedFile` to the archive and say what it became."""
    writer.add(
        encoded.name,
        encoded.kind,
        encoded.payload,
        original_size=encoded.original_size,
        mode=mode,
        mtime_ns=mtime_ns,
        metadata=encoded.metadata,
    )
    return MemberPlan(encoded.name, encoded.kind, encoded.original_size, len(encoded.payload), encoded.note)


def add_file(
    writer: ArchiveWriter,
    name: str,
    data: bytes,
    codec: Codec,
    mode: int = 0o644,
    mtime_ns: int = 0,
    keep_unreadable: bool = False,
) -> MemberPlan:
    """Store one file's bytes as an IMAGE or RAW member and say which (:func:`encode_member` + :func:`write_member`)."""
    return write_member(writer, encode_member(name, data, codec, keep_unreadable), mode=mode, mtime_ns=mtime_ns)


def add_link(writer: ArchiveWriter, name: str, target: str, mtime_ns: int = 0) -> MemberPlan:
    """Store a symbolic link as a LINK member (its target must stay inside the archive)."""
    data = target.encode("utf-8", "surrogateescape")
    writer.add(name, MemberKind.LINK, data, original_size=len(data), mode=0o777, mtime_ns=mtime_ns)
    return MemberPlan(name, MemberKind.LINK, 0, len(data), f"link to {target}")


def add_dir(writer: ArchiveWriter, name: str, mode: int = 0o755, mtime_ns: int = 0) -> MemberPlan:
    """Store a folder (an empty one: others are implied by their members) as a DIR member."""
    writer.add(name, MemberKind.DIR, b"", original_size=0, mode=mode, mtime_ns=mtime_ns)
    return MemberPlan(name, MemberKind.DIR, 0, 0, "folder")


def check_raw_frame(payload: bytes, size: int, name: str) -> None:
    """Require one complete zstd frame, exactly the payload, that declares ``size`` and carries a content checksum.

    zstd verifies the checksum only when the frame says it has one and only once it reaches the
    frame's end, so without these checks a frame with its flag cleared or its tail cut off could
    still yield the declared number of (wrong) bytes.
    """
    try:
        params = zstandard.get_frame_parameters(payload)
        pos = zstandard.frame_header_size(payload)
    except zstandard.ZstdError:
        raise CorruptArchiveError(f"{name}: stored data is not a zstd frame") from None
    if params.content_size != size:
        raise CorruptArchiveError(f"{name}: stored data has the wrong length")
    if not params.has_checksum:
        raise CorruptArchiveError(f"{name}: stored data has no content checksum")
    while True:  # walk the block headers to find where the frame ends
        if pos + 3 > len(payload):
            raise CorruptArchiveError(f"{name}: stored data is truncated")
        header = int.from_bytes(payload[pos : pos + 3], "little")
        kind, length = (header >> 1) & 3, header >> 3
        if kind == 3:
            raise CorruptArchiveError(f"{name}: stored data has a reserved block type")
        pos += 3 + (1 if kind == 1 else length)
        if header & 1:
            break
    if pos + 4 != len(payload):
        raise CorruptArchiveError(f"{name}: stored data is truncated or has trailing bytes")


def iter_raw(payload: bytes, size: int, name: str) -> Iterator[bytes]:
    """Decompress a RAW member in chunks: a complete frame, the declared length, zstd's content checksum."""
    check_raw_frame(payload, size, name)
    got = 0
    try:
        with decompressor().stream_reader(io.BytesIO(payload), read_across_frames=False) as reader:
            while True:
                chunk = reader.read(_CHUNK)
                if not chunk:
                    break
                got += len(chunk)
                if got > size:
                    break
                yield chunk
    except zstandard.ZstdError as exc:
        raise CorruptArchiveError(f"{name}: stored data does not decompress ({exc})") from None
    if got != size:
        raise CorruptArchiveError(f"{name}: stored data has the wrong length")


def member_meta(info: MemberInfo) -> dict:
    """The JSON metadata of a member ({} when empty)."""
    if not info.metadata:
        return {}
    if len(info.metadata) > MAX_META_BYTES:
        raise CorruptArchiveError(f"{info.name}: metadata is larger than {MAX_META_BYTES} bytes")
    try:
        meta = json.loads(info.metadata)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise CorruptArchiveError(f"{info.name}: metadata is not JSON") from None
    if not isinstance(meta, dict):
        raise CorruptArchiveError(f"{info.name}: metadata is not a JSON object")
    return meta


def raw_reason(info: MemberInfo) -> str:
    """Why a RAW member was stored as it is: ``16-bit samples (PNG bit depth 16)``, ``palette (mode P)``,
    ``not an image``… (its metadata checked, see :func:`aezip.codec.imagefile.check_raw_meta`)."""
    return check_raw_meta(member_meta(info), info.name)


def output_name(info: MemberInfo, fmt: str) -> str:
    """Relative path a member is restored to: its own name, or with ``.png`` for ``--format png``."""
    if fmt == "png" and info.kind == MemberKind.IMAGE:
        return str(PurePosixPath(info.name).with_suffix(".png"))
    return info.name


def add_model(writer: ArchiveWriter, model: LoadedModel) -> int:
    """Store ``model``'s file in the archive as a MODEL member, so the archive decodes anywhere.

    Returns the bytes added. The file is read again and must still be the model that coded the images.
    """
    if model.path is None:
        raise AezipError(f"model {model.sha256[:32]} was not loaded from a file, so it cannot be embedded")
    try:
        data = Path(model.path).read_bytes()
    except OSError as exc:
        raise AezipError(f"cannot read model {model.path}: {exc.strerror or exc}") from None
    if hashlib.sha256(data).hexdigest() != model.sha256:
        raise AezipError(f"model file {model.path} changed while packing")
    writer.add(model.sha256, MemberKind.MODEL, data, original_size=len(data), mode=0o644)
    return len(data)


def add_context(writer: ArchiveWriter, model: LoadedModel) -> int:
    """Store the context tables ``model`` coded ``ans-ctx`` streams with as a CONTEXT member; returns the bytes added.

    :class:`AezipError` when there is no side file to embed (the archive would not decode without it).
    """
    data = context_file_bytes(model)
    if data is None:
        raise AezipError(f"model {model.sha256[:32]} has no context tables file to embed for ans-ctx")
    writer.add(hashlib.sha256(data).hexdigest(), MemberKind.CONTEXT, data, original_size=len(data), mode=0o644)
    return len(data)


class Archive:
    """Random access to the members of an ``.aez`` archive by name, in archive order.

    ``models`` lists extra model files for images not encoded with the default model; ``codec``
    reuses an existing decoder (its models) instead of loading one. A reader is safe to hand to
    DataLoader workers (each opens its own file handle and decoder).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str = "auto",
        models: list[str | Path] | None = None,
        codec: Codec | None = None,
    ) -> None:
        self._reader = self._open_reader(path)
        self._device = device
        self._models = list(models or [])
        self._codec = codec
        self._codec_pid = os.getpid() if codec is not None else 0
        self._embedded: list[LoadedModel] | None = None

    def _open_reader(self, path: str | os.PathLike[str]) -> ArchiveReader:
        """The container reader for ``path`` (subclasses: sharded datasets, object stores)."""
        return ArchiveReader(path)

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_codec"] = None
        state["_embedded"] = None
        return state

    def close(self) -> None:
        self._reader.close()

    @property
    def path(self) -> str:
        return self._reader.path

    @property
    def stored_bytes(self) -> int:
        """Bytes stored: the archive's size, or the sum of the shards' for a sharded dataset."""
        return self._reader.size

    @property
    def members(self) -> list[MemberInfo]:
        """The members that stand for files, links and folders (embedded models and tables are not among them)."""
        return [m for m in self._reader.members if m.kind not in HIDDEN_KINDS]

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._reader and self._reader[name].kind not in HIDDEN_KINDS

    def info(self, name: str) -> MemberInfo:
        """Index record of a member (KeyError if absent)."""
        info = self._reader[name]
        if info.kind in HIDDEN_KINDS:
            raise KeyError(f"no member named {name!r} in {self.path}")
        return info

    def embedded_models(self) -> list[LoadedModel]:
        """The models stored inside the archive (MODEL members), each checked against its sha256 name,
        with the context tables stored for them (CONTEXT members); read and checked once.

        Every MODEL and CONTEXT member is checked, needed by an image or not (``verify`` and
        ``unpack`` call this first): :class:`CorruptArchiveError` on the first that fails.
        """
        if self._embedded is None:
            self._embedded = _load_embedded(self._reader)
        return self._embedded

    def is_image(self, name: str) -> bool:
        """Whether the member was coded by the model (lossy) rather than stored losslessly."""
        return self._reader[name].kind == MemberKind.IMAGE

    @property
    def codec(self) -> Codec:
        """The decoder, created on first use in each process (a forked worker never reuses a
        parent's CUDA decoder); loads the default model and any extra ones."""
        if self._codec is None or self._codec_pid != os.getpid():
            self._codec = Codec(device=self._device, models=[*self._models, *self.embedded_models()])
            self._codec_pid = os.getpid()
        return self._codec

    def payload(self, name: str) -> bytes:
        """Stored bytes of a member, checksum verified."""
        return self._reader.read_payload(name)

    def payloads(self, names: Sequence[str]) -> list[bytes]:
        """Stored bytes of several members, checksum verified; nearby payloads are read together
        (one range request per run at a URL)."""
        return self._reader.read_payloads(names)

    def decode(
        self, names: list[str], max_batch_pixels: int = 4_000_000, boxes: Sequence[Box | None] | None = None
    ) -> list[Decoded]:
        """Decoded pixels of IMAGE members, batched by latent shape (see ``Codec.decode_many``);
        with ``boxes``, only those regions (one box or None per name)."""
        for n in names:
            if not self.is_image(n):
                raise AezipError(f"{n} is not a coded image")
        payloads = self.payloads(names)
        if boxes is not None:
            if len(boxes) != len(names):
                raise AezipError(f"{len(boxes)} boxes for {len(names)} images")
            checked = zip(boxes, payloads, names, strict=True)
            boxes = [None if b is None else _member_box(b, p, n) for b, p, n in checked]
        return self.codec.decode_many(payloads, max_batch_pixels=max_batch_pixels, boxes=boxes)

    def image(self, name: str, box: Box | None = None) -> Image.Image:
        """A member as a PIL image: the reconstruction, or the original for losslessly stored images.

        ``box`` ``(left, top, right, bottom)`` gives only that region (as ``image.crop(box)`` would,
        inside the image): for a coded image only the latents under it are synthesised, so a small
        crop of a large image is fast (see :meth:`aezip.Codec.decode_many`).
        """
        if self.is_image(name):
            return self.decode([name], boxes=None if box is None else [box])[0].to_image()
        image = open_image(self.read_bytes(name), name)
        if box is None:
            return image
        try:
            return image.crop(check_box(box, image.width, image.height))
        except AezipError as exc:
            raise AezipError(f"{name}: {exc}") from None

    def stats(self, name: str) -> ImageStats | None:
        """PSNR, bpp and quality measured when the image was packed (``pack --measure`` or
        ``--min-psnr``/``--max-bpp``), or None when they were not measured."""
        info = self.info(name)
        return stats_from_meta(member_meta(info), name) if info.kind == MemberKind.IMAGE else None

    def link_target(self, name: str) -> str:
        """Where a LINK member points, relative to its folder (checked to stay inside the archive)."""
        return self._reader.read_link(name)

    def read_bytes(self, name: str, fmt: str = "original", jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
        """The bytes ``aezip unpack`` writes for a member, held in memory (a file's, not a link's or folder's)."""
        info = self._reader[name]
        if info.kind == MemberKind.RAW:
            return b"".join(iter_raw(self.payload(name), info.original_size, name))
        if info.kind == MemberKind.LINK:
            raise AezipError(f"{name} is a symbolic link to {self.link_target(name)}")
        if info.kind == MemberKind.DIR:
            raise AezipError(f"{name} is a folder")
        return render(info, self.decode([name])[0], fmt, jpeg_quality)


def _load_embedded(reader: ArchiveReader) -> list[LoadedModel]:
    """Parse and check every MODEL and CONTEXT member (see :meth:`Archive.embedded_models`)."""
    models: dict[str, LoadedModel] = {}
    contexts: list[tuple[str, bytes]] = []
    for info in reader.members:
        if info.kind not in HIDDEN_KINDS:
            continue
        what = "model" if info.kind == MemberKind.MODEL else "context tables"
        data = reader.read_payload(info)
        if hashlib.sha256(data).hexdigest() != info.name:
            raise CorruptArchiveError(f"embedded {what} {info.name[:32]} does not match its sha256")
        if info.kind == MemberKind.CONTEXT:
            contexts.append((info.name, data))
            continue
        try:
            models[info.name] = model_from_bytes(data, source=f"embedded model {info.name[:32]}")
        except ModelError as exc:
            raise CorruptArchiveError(str(exc)) from None
    for name, data in contexts:
        source = f"embedded context tables {name[:32]}"
        try:
            owner = models.get(str(read_safetensors(data, source, "context tables file")[1].get("model_sha256")))
            if owner is None:
                raise CorruptArchiveError(f"{source} belong to no model embedded in the archive")
            if owner.context is not None:
                raise CorruptArchiveError(f"{source}: the archive holds two context tables for one model")
            attach_context(owner, data, source)
        except ModelError as exc:
            raise CorruptArchiveError(str(exc)) from None
    return list(models.values())


def _member_box(box: Box, payload: bytes, name: str) -> Box:
    """``box`` checked against the size in a member's image stream header; errors name the member."""
    header, _ = parse_header(payload)
    try:
        return check_box(box, header.width, header.height)
    except AezipError as exc:
        raise AezipError(f"{name}: {exc}") from None


#: What Pillow may raise when writing an image from hostile metadata (beyond our own checks).
_WRITE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OSError, SyntaxError, OverflowError, struct.error)


def render(info: MemberInfo, decoded: Decoded, fmt: str, jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """Write decoded pixels as a file: the original format (from metadata, validated) or PNG.

    ``decoded`` is let go once its pixels are in a PIL image, so when the caller holds no other
    reference the decoded array is freed before the file is encoded.
    """
    original, mode, exif = check_file_meta(member_meta(info), info.name)
    im, icc = decoded.to_image(), decoded.icc
    del decoded
    if mode and im.mode != mode:
        raise CorruptArchiveError(f"{info.name}: metadata says mode {mode} but the image stream holds {im.mode}")
    if icc is not None and len(icc) > MAX_ICC_BYTES:
        raise CorruptArchiveError(f"{info.name}: ICC profile is larger than {MAX_ICC_BYTES} bytes")
    target = "PNG" if fmt == "png" else original
    try:
        if fmt == "png":
            return encode_file(im, "PNG")
        return encode_file(im, target, exif, jpeg_quality=jpeg_quality)
    except UnsupportedImageError as exc:
        raise CorruptArchiveError(f"{info.name}: {exc}") from None
    except _WRITE_ERRORS as exc:
        detail = str(exc).split("\n")[0] or type(exc).__name__
        raise CorruptArchiveError(f"{info.name}: cannot be written as {target} ({detail})") from None
