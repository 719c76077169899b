"""Structure-aware fuzzing of .aez archives: mutate real archives, fix up their checksums, run every reader.

Each mutant changes one field of a real archive (header, footer, index entry, image stream header, metadata
JSON, RAW zstd frame, link target, name) to 0, 1, max, −1, off by one or a hostile value, then recomputes
every offset, length and crc32 the mutation did not target, so the layers past the CRCs are reached. It then
runs ``verify``, ``unpack``, ``list`` and ``info`` and requires:

* the documented error class (:class:`aezip.AezipError`, one line, exit 1 in the CLI) or a valid result;
* ``verify`` and ``unpack`` agree (one refuses exactly when the other does);
* a refused ``unpack`` leaves nothing behind; nothing is ever written outside the destination;
* every RAW member restored under its own name has exactly the original bytes (no silent corruption);
* bounded time per mutant.

Long run: ``python -m benchmarks.fuzz_archives --mutants 10000`` (prints counts, time and any failure).
A short run is part of the test suite (tests/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from aezip.archive.container import spec

ENTRY_FIELDS = ("kind", "flags", "offset", "length", "crc", "original_size", "mode", "mtime")
ENTRY_WIDTHS = {"kind": 1, "flags": 2, "offset": 8, "length": 8, "crc": 4, "original_size": 8, "mode": 4, "mtime": 8}
FOOTER_FIELDS = {"index_offset": 8, "index_length": 8, "index_crc": 4, "count": 4}
HEADER_FIELDS = {"major": (8, 1), "minor": (9, 1), "flags": (10, 4), "crc": (14, 4)}
# Image stream header (docs/FORMAT.md): name → (offset, width in bytes).
STREAM_FIELDS = {
    "version": (4, 1),
    "entropy": (5, 1),
    "quality": (6, 1),
    "flags": (7, 1),
    "model_id": (8, 1),
    "width": (24, 4),
    "height": (28, 4),
    "channels": (32, 2),
    "latent_h": (34, 2),
    "latent_w": (36, 2),
    "latent_len": (38, 4),
}
META_VALUES: list[object] = [
    None,
    0,
    -1,
    "",
    "PNG",
    "JPEG",
    "GIF",
    "PDF",
    "EPS",
    "ICO",
    "png",
    "RGB",
    "RGBA",
    "L",
    "LA",
    "P",
    "CMYK",
    "I;16",
    "zz",
    "4578696600004d4d002a",
    "4578696600004949",
    "45786966000049492a0008000000ffff",
    "00" * 70000,
    [1, 2],
    {"a": 1},
    1e308,
    True,
]
CORPUS_FILES = {
    "labels.csv": b"name,label\nphotos/a.png,1\n",
    "empty.txt": b"",
    "blob.bin": bytes(range(256)) * 8,
}


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(0.3 * xx[..., None] + rng.uniform(0, 6, 3)) * np.cos(0.2 * yy[..., None])
    return np.clip(base + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8)


def build_source(root: Path) -> dict[str, bytes]:
    """A small tree with every member kind: coded images (RGB, gray, alpha+ICC, JPEG with EXIF), data, links."""
    (root / "photos" / "gray").mkdir(parents=True)
    (root / "empty").mkdir()
    Image.fromarray(_photo(20, 24, 1)).save(root / "photos" / "a.png")
    Image.fromarray(_photo(16, 16, 2)[..., 0], "L").save(root / "photos" / "gray" / "g.png")
    rgba = Image.fromarray(_photo(12, 18, 3)).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(root / "photos" / "alpha.png", icc_profile=b"\0" * 132)
    jpeg = Image.fromarray(_photo(16, 24, 4))
    exif = jpeg.getexif()
    exif[0x0112] = 1
    exif[0x010F] = "aezip"
    jpeg.save(root / "photos" / "b.jpg", quality=90, exif=exif.tobytes())
    Image.fromarray(_photo(16, 16, 5)).convert("P").save(root / "photos" / "pal.png")
    for name, data in CORPUS_FILES.items():
        (root / name).write_bytes(data)
    os.symlink("../labels.csv", root / "photos" / "labels-link.csv")
    os.symlink("photos/gray", root / "gray-link")
    return {name: data for name, data in CORPUS_FILES.items()} | {
        "photos/pal.png": (root / "photos" / "pal.png").read_bytes()
    }


def build_corpus(work: Path, codec_ans: object, codec_zstd: object) -> tuple[list[bytes], dict[str, bytes]]:
    """Two real archives of the same tree (ANS and zstd latents) and the exact bytes of its stored files."""
    from aezip.archive.pack import pack

    src = work / "src"
    src.mkdir()
    raw = build_source(src)
    archives = []
    for n, codec in enumerate((codec_ans, codec_zstd)):
        out = work / f"corpus{n}.aez"
        pack(src, out, codec)  # type: ignore[arg-type]
        archives.append(out.read_bytes())
    return archives, raw


@dataclass
class Parsed:
    """An archive taken apart into fields, put back together by :meth:`build` with every check fixed up."""

    header: bytearray
    entries: list[dict]
    footer: dict
    fixed: set = field(default_factory=set)  # fields a mutation set on purpose: not recomputed

    @classmethod
    def parse(cls, data: bytes) -> Parsed:
        index_offset, index_length, index_crc, count, _ = spec.FOOTER.unpack(data[-spec.FOOTER_SIZE :])
        index = data[index_offset : index_offset + index_length]
        entries, pos = [], 0
        for _ in range(count):
            (name_len,) = spec.ENTRY_NAME_LEN.unpack_from(index, pos)
            pos += 2
            name = index[pos : pos + name_len]
            pos += name_len
            values = spec.ENTRY_FIXED.unpack_from(index, pos)
            pos += spec.ENTRY_FIXED.size
            (meta_len,) = spec.ENTRY_META_LEN.unpack_from(index, pos)
            pos += 4
            entry = dict(zip(ENTRY_FIELDS, values, strict=True))
            entry.update(name=bytes(name), metadata=bytes(index[pos : pos + meta_len]), name_len=None, meta_len=None)
            entry["payload"] = data[entry["offset"] : entry["offset"] + entry["length"]]
            pos += meta_len
            entries.append(entry)
        footer = {"index_offset": None, "index_length": None, "index_crc": None, "count": None}
        return cls(bytearray(data[: spec.HEADER_SIZE]), entries, footer)

    def build(self) -> bytes:
        header = bytes(self.header)
        if "header.crc" not in self.fixed:
            header = header[:14] + struct.pack("<I", zlib.crc32(header[:14]))
        body, index = [header], []
        offset = spec.HEADER_SIZE
        for e in self.entries:
            payload = e["payload"]
            length = len(payload) if "length" not in e["fixed"] else e["length"]
            crc = zlib.crc32(payload) if "crc" not in e["fixed"] else e["crc"]
            off = offset if "offset" not in e["fixed"] else e["offset"]
            fixed = struct.pack(
                "<BHQQIQIq",
                e["kind"],
                e["flags"],
                off,
                length,
                crc,
                e["original_size"],
                e["mode"],
                e["mtime"],
            )
            name_len = len(e["name"]) if e["name_len"] is None else e["name_len"]
            meta_len = len(e["metadata"]) if e["meta_len"] is None else e["meta_len"]
            index.append(struct.pack("<H", name_len) + e["name"] + fixed + struct.pack("<I", meta_len) + e["metadata"])
            body.append(payload)
            offset += len(payload)
        idx = b"".join(index)
        f = self.footer
        footer = spec.FOOTER.pack(
            offset if f["index_offset"] is None else f["index_offset"],
            len(idx) if f["index_length"] is None else f["index_length"],
            zlib.crc32(idx) if f["index_crc"] is None else f["index_crc"],
            len(self.entries) if f["count"] is None else f["count"],
            spec.FOOTER_MAGIC,
        )
        return b"".join(body) + idx + footer


def _int_values(rng: random.Random, value: int, width: int, signed: bool = False) -> int:
    top = (1 << (8 * width)) - 1
    choice = rng.choice(["0", "1", "max", "max-1", "-1", "+1", "-1v", "x2", "half", "random", "2^31", "2^32"])
    out = {
        "0": 0,
        "1": 1,
        "max": top,
        "max-1": top - 1,
        "-1": top,
        "+1": value + 1,
        "-1v": value - 1,
        "x2": value * 2,
        "half": value // 2,
        "random": rng.randrange(top + 1),
        "2^31": 1 << 31,
        "2^32": 1 << 32,
    }[choice]
    if signed:
        half = 1 << (8 * width - 1)
        return ((out + half) % (top + 1)) - half
    return out % (top + 1)


def _set_stream_field(payload: bytes, rng: random.Random) -> tuple[bytes, str]:
    name = rng.choice(list(STREAM_FIELDS))
    offset, width = STREAM_FIELDS[name]
    if len(payload) < offset + width:
        return payload, "stream-short"
    old = int.from_bytes(payload[offset : offset + width], "little")
    new = _int_values(rng, old, width)
    return payload[:offset] + new.to_bytes(width, "little") + payload[offset + width :], f"stream.{name}"


def _mutate_payload_bytes(payload: bytes, rng: random.Random) -> tuple[bytes, str]:
    if not payload:
        return bytes([rng.randrange(256)]), "payload.grow"
    kind = rng.choice(["flip", "truncate", "extend", "zero-tail", "tail4", "frame-flags", "set-byte"])
    data = bytearray(payload)
    if kind == "flip":
        pos = rng.randrange(len(data))
        data[pos] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[rng.randrange(len(data)) :]
    elif kind == "extend":
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif kind == "zero-tail":
        cut = rng.randint(1, min(16, len(data)))
        data[-cut:] = bytes(cut)
    elif kind == "tail4":
        del data[-4:]
    elif kind == "frame-flags" and len(data) > 4:
        data[4] ^= 1 << rng.randrange(8)  # zstd frame header descriptor (RAW) / stream entropy byte (IMAGE)
    else:
        data[rng.randrange(len(data))] = rng.choice([0, 1, 0x7F, 0x80, 0xFF])
    return bytes(data), f"payload.{kind}"


def _mutate_metadata(entry: dict, rng: random.Random) -> str:
    kind = rng.choice(["set", "set", "set", "drop", "nest", "array", "garbage", "huge-exif", "extra"])
    try:
        meta = json.loads(entry["metadata"]) if entry["metadata"] else {}
    except ValueError:
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    keys = ["format", "format", "mode", "exif", "exif", "lossless"]
    if kind == "set":
        meta[rng.choice(keys)] = rng.choice(META_VALUES)
    elif kind == "drop" and meta:
        meta.pop(rng.choice(list(meta)))
    elif kind == "nest":
        depth = rng.choice([100, 1000, 5000, 100_000])
        entry["metadata"] = (
            ("[" * depth + "]" * depth).encode() if rng.random() < 0.5 else b'{"a":' * depth + b"1" + b"}" * depth
        )
        return "meta.nest"
    elif kind == "array":
        entry["metadata"] = b"[1, 2, 3]"
        return "meta.array"
    elif kind == "garbage":
        entry["metadata"] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
        return "meta.garbage"
    elif kind == "huge-exif":
        meta["exif"] = "457869660000" + "4d4d002a" + "00" * rng.choice([10, 70000])
    elif kind == "extra":
        meta[rng.choice(["x", "lossless", "format"])] = {"nested": [1, {"a": None}]}
    entry["metadata"] = json.dumps(meta).encode()
    return f"meta.{kind}"


def _mutate_name(entry: dict, entries: list[dict], rng: random.Random) -> str:
    others = [e["name"] for e in entries if e is not entry]
    kind = rng.choice(["deep", "long-part", "dotdot", "abs", "clash-file", "clash-dir", "dup", "bad-utf8", "len"])
    if kind == "deep":
        entry["name"] = b"/".join([b"d"] * rng.choice([100, 1000, 2000]))
    elif kind == "long-part":
        entry["name"] = b"x" * rng.choice([255, 256, 300, 4096])
    elif kind == "dotdot":
        entry["name"] = b"../" + entry["name"]
    elif kind == "abs":
        entry["name"] = b"/" + entry["name"]
    elif kind == "clash-file" and others:
        entry["name"] = rng.choice(others) + b"/x"
    elif kind == "clash-dir" and others:
        entry["name"] = rng.choice(others).split(b"/")[0]
    elif kind == "dup" and others:
        entry["name"] = rng.choice(others)
    elif kind == "bad-utf8":
        entry["name"] = entry["name"] + b"\xff"
    else:
        entry["name_len"] = _int_values(rng, len(entry["name"]), 2)
    return f"name.{kind}"


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One mutant of ``data`` and a label saying what was changed."""
    p = Parsed.parse(data)
    for e in p.entries:
        e["fixed"] = set()
    area = rng.choices(
        ["header", "footer", "entry", "name", "meta", "stream", "payload", "link", "bytes"],
        weights=[3, 3, 12, 6, 10, 14, 10, 4, 3],
    )[0]
    if area == "header":
        name = rng.choice(list(HEADER_FIELDS))
        offset, width = HEADER_FIELDS[name]
        old = int.from_bytes(p.header[offset : offset + width], "little")
        p.header[offset : offset + width] = _int_values(rng, old, width).to_bytes(width, "little")
        if name == "crc":
            p.fixed.add("header.crc")
        return p.build(), f"header.{name}"
    if area == "footer":
        name = rng.choice(list(FOOTER_FIELDS))
        p.footer[name] = _int_values(rng, 100, FOOTER_FIELDS[name])
        return p.build(), f"footer.{name}"
    if area == "bytes":  # unfixed byte changes: the CRCs must refuse them
        out = bytearray(p.build())
        pos = rng.randrange(len(out))
        out[pos] ^= 1 << rng.randrange(8)
        return bytes(out), "bytes.unfixed"
    entry = rng.choice(p.entries)
    if area == "entry":
        name = rng.choice(ENTRY_FIELDS)
        entry[name] = _int_values(rng, entry[name], ENTRY_WIDTHS[name], signed=name == "mtime")
        if name in ("offset", "length", "crc"):
            entry["fixed"].add(name)
        return p.build(), f"entry.{name}"
    if area == "name":
        label = _mutate_name(entry, p.entries, rng)
        return p.build(), label
    if area == "meta":
        images = [e for e in p.entries if e["kind"] == 2]
        entry = rng.choice(images) if images and rng.random() < 0.8 else entry
        if rng.random() < 0.2:
            entry["meta_len"] = _int_values(rng, len(entry["metadata"]), 4)
            return p.build(), "meta.len"
        label = _mutate_metadata(entry, rng)
        return p.build(), label
    if area == "stream":
        images = [e for e in p.entries if e["kind"] == 2] or [entry]
        entry = rng.choice(images)
        entry["payload"], label = _set_stream_field(entry["payload"], rng)
        return p.build(), label
    if area == "link":
        links = [e for e in p.entries if e["kind"] == 3] or [entry]
        entry = rng.choice(links)
        entry["payload"] = rng.choice(
            [b"/etc/passwd", b"../../x", b"..", b"../..", b"a/../../..", b"", b"a//b", b"./a", b"x" * 5000, b"\xff"]
        )
        if rng.random() < 0.7:
            entry["original_size"] = len(entry["payload"])
        if rng.random() < 0.3:
            entry["kind"] = rng.choice([1, 2, 4])
        return p.build(), "link.target"
    entry["payload"], label = _mutate_payload_bytes(entry["payload"], rng)
    return p.build(), label


@dataclass
class Result:
    mutants: int = 0
    refused: int = 0
    accepted: int = 0
    failures: list[str] = field(default_factory=list)
    labels: Counter = field(default_factory=Counter)
    slowest: float = 0.0
    seconds: float = 0.0


def _tree(root: Path) -> list[str]:
    from aezip.archive.pack import walk_tree

    return sorted(p.relative_to(root).as_posix() for p in walk_tree(root)) if root.exists() else []


def check_mutant(data: bytes, work: Path, codec: object, raw: dict[str, bytes], runner: object) -> str | None:
    """Run every reader on one mutant; None if it behaved, else what went wrong."""
    from aezip.archive.pack import unpack, verify
    from aezip.archive.reader import Archive
    from aezip.cli.app import main
    from aezip.errors import AezipError

    arc = work / "m.aez"
    arc.write_bytes(data)
    out = work / "out"
    out.mkdir()
    dest = out / "dest"
    verdicts = []
    for step in ("verify", "unpack"):
        try:
            with Archive(arc, codec=codec) as archive:  # type: ignore[arg-type]
                verify(archive) if step == "verify" else unpack(archive, dest)
            verdicts.append(True)
        except AezipError as exc:
            if "\n" in str(exc):
                return f"{step}: multi-line message {str(exc)[:200]!r}"
            verdicts.append(False)
        except Exception:  # noqa: BLE001 - a crash is exactly what the fuzzer looks for
            return f"{step}: crash\n{traceback.format_exc(limit=6)}"
    if verdicts[0] != verdicts[1]:
        return f"verify {'passed' if verdicts[0] else 'refused'} but unpack {'passed' if verdicts[1] else 'refused'}"
    leftovers = _tree(out)
    if not verdicts[1] and leftovers:
        return f"refused unpack left {leftovers[:5]}"
    if sorted(p.name for p in work.iterdir()) != ["m.aez", "out"] or any(not x.startswith("dest") for x in leftovers):
        return f"something was written outside the destination: {leftovers[:5]}"
    if verdicts[1]:
        for name, content in raw.items():
            path = dest / name
            if path.is_file() and not path.is_symlink() and path.read_bytes() != content:
                return f"silent corruption: {name} restored with different bytes"
        from aezip.archive.pack import walk_tree

        for path in walk_tree(dest):
            if path.is_symlink() and not path.resolve().is_relative_to(dest.resolve()):
                return f"link {path.relative_to(dest)} leads outside the destination"
            if path.is_file() and path.suffix in (".png", ".jpg") and path.relative_to(dest).as_posix() not in raw:
                try:
                    with Image.open(path) as im:
                        fmt = im.format
                except Exception:  # noqa: BLE001
                    fmt = "unreadable"
                if fmt not in ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "PPM"):
                    return f"{path.relative_to(dest)} restored as {fmt}"
    for args in (["list", str(arc)], ["info", str(arc)]):
        result = runner.invoke(main, args)  # type: ignore[attr-defined]
        if result.exit_code not in (0, 1) or not isinstance(result.exception, SystemExit | None):
            return f"{args[0]}: exit {result.exit_code} {result.exception!r}"
    return None


def run(mutants: int, seed: int = 0, time_limit: float = 30.0, log: object = None) -> Result:
    """Build the corpus and check ``mutants`` mutants; returns counts and failures."""
    import torch
    from click.testing import CliRunner

    from aezip.archive.pack import remove_tree
    from aezip.codec.codec import Codec

    torch.set_num_threads(1)
    rng = random.Random(seed)
    result = Result()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aezip-fuzz-") as tmp:
        base = Path(tmp)
        codec = Codec(device="cpu", entropy="ans")
        corpus, raw = build_corpus(base, codec, Codec(device="cpu", entropy="zstd", model=codec.model))
        runner = CliRunner()
        for number in range(mutants):
            data, label = mutate(rng.choice(corpus), rng)
            work = base / f"m{number}"
            work.mkdir()
            t0 = time.perf_counter()
            problem = check_mutant(data, work, codec, raw, runner)
            took = time.perf_counter() - t0
            result.slowest = max(result.slowest, took)
            if problem is None and took > time_limit:
                problem = f"took {took:.1f} s"
            result.mutants += 1
            result.labels[label] += 1
            result.refused += not (work / "out" / "dest").exists()
            if problem:
                result.failures.append(f"mutant {number} ({label}): {problem}")
                if log:
                    print(result.failures[-1], file=log, flush=True)  # type: ignore[call-overload]
            remove_tree(work)
            if log and (number + 1) % 500 == 0:
                print(
                    f"{number + 1} mutants, {len(result.failures)} failures, {time.perf_counter() - start:.0f} s",
                    file=log,
                    flush=True,
                )  # type: ignore[call-overload]
    result.accepted = result.mutants - result.refused
    result.seconds = time.perf_counter() - start
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mutants", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds allowed per mutant")
    args = parser.parse_args(argv)
    result = run(args.mutants, args.seed, args.time_limit, log=sys.stdout)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{result.mutants} mutants in {result.seconds:.0f} s ({result.seconds / max(result.mutants, 1) * 1000:.0f} ms "
        f"each, slowest {result.slowest:.2f} s, peak RSS {peak:.0f} MiB): {result.refused} refused, "
        f"{result.accepted} restored, {len(result.failures)} failures"
    )
    print("mutations:", ", ".join(f"{k} {v}" for k, v in sorted(result.labels.items())))
    for failure in result.failures[:50]:
        print(failure)
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
