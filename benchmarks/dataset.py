"""Whole-folder figures: ``aezip pack`` / ``aezip unpack`` beside ``tar`` + ``zstd -19``.

Both tools run as the user would run them, as separate processes timed from outside (so
aezip's times include starting Python and loading torch and the model). ``tar | zstd -19``
uses the command-line tools when both are installed, else Python's tarfile with the
zstandard module at level 19; ``method`` says which.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import zstandard

from benchmarks.images import image_files

AEZIP_CLI = [sys.executable, "-c", "from aezip.cli.app import main; main()"]
ZSTD_LEVEL = 19


def _tree_bytes(root: Path) -> tuple[int, int]:
    """(file count, total bytes) of the regular files under ``root``."""
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _run(cmd: list[str], threads: int) -> float:
    """Wall time of a command run with ``threads`` OpenMP threads; its error output is the exception message."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd[3:])} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return time.perf_counter() - start


def aezip_roundtrip(folder: Path, workdir: Path, quality: int, entropy: str, device: str, threads: int) -> dict:
    """Time ``aezip pack`` of the folder and ``aezip unpack`` of the archive (original formats)."""
    archive = workdir / "dataset.aez"
    dest = workdir / "aezip-unpacked"
    opts = ["-q", str(quality), "--entropy", entropy, "--device", device]
    pack_s = _run([*AEZIP_CLI, "pack", str(folder), str(archive), *opts], threads)
    unpack_s = _run([*AEZIP_CLI, "unpack", str(archive), str(dest), "--device", device], threads)
    command = f"OMP_NUM_THREADS={threads} aezip pack DIR OUT.aez {' '.join(opts)}; "
    command += f"aezip unpack OUT.aez DEST --device {device}"
    return _result("aezip", command, folder, archive, dest, pack_s, unpack_s)


def _tar_zstd_cli(folder: Path, archive: Path, dest: Path) -> tuple[float, float]:
    start = time.perf_counter()
    with open(archive, "wb") as out:
        tar = subprocess.Popen(["tar", "-cf", "-", "-C", str(folder.parent), folder.name], stdout=subprocess.PIPE)
        subprocess.run(["zstd", f"-{ZSTD_LEVEL}", "-T1", "-q", "-c"], stdin=tar.stdout, stdout=out, check=True)
        tar.stdout.close()
        if tar.wait():
            raise subprocess.CalledProcessError(tar.returncode, "tar")
    pack_s = time.perf_counter() - start
    dest.mkdir()
    start = time.perf_counter()
    with open(archive, "rb") as src:
        unzstd = subprocess.Popen(["zstd", "-d", "-q", "-c"], stdin=src, stdout=subprocess.PIPE)
        subprocess.run(["tar", "-xf", "-", "-C", str(dest)], stdin=unzstd.stdout, check=True)
        unzstd.stdout.close()
        if unzstd.wait():
            raise subprocess.CalledProcessError(unzstd.returncode, "zstd -d")
    return pack_s, time.perf_counter() - start


def _tar_zstd_python(folder: Path, archive: Path, dest: Path) -> tuple[float, float]:
    start = time.perf_counter()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(folder, arcname=folder.name)
    archive.write_bytes(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(buf.getvalue()))
    pack_s = time.perf_counter() - start
    start = time.perf_counter()
    raw = zstandard.ZstdDecompressor().decompress(archive.read_bytes())
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r") as tar:
        tar.extractall(dest, filter="data")
    return pack_s, time.perf_counter() - start


def tar_zstd_roundtrip(folder: Path, workdir: Path) -> dict:
    """Time tar + zstd -19 of the original files and the way back."""
    archive = workdir / "dataset.tar.zst"
    dest = workdir / "tar-unpacked"
    if shutil.which("tar") and shutil.which("zstd"):
        method = f"tar -cf - DIR | zstd -{ZSTD_LEVEL} -T1; zstd -d | tar -xf -"
        pack_s, unpack_s = _tar_zstd_cli(folder, archive, dest)
    else:
        method = f"python tarfile + zstandard level {ZSTD_LEVEL}"
        pack_s, unpack_s = _tar_zstd_python(folder, archive, dest)
    return _result("tar+zstd", method, folder, archive, dest, pack_s, unpack_s)


def _result(tool: str, command: str, folder: Path, archive: Path, dest: Path, pack_s: float, unpack_s: float) -> dict:
    """Sizes and rates of one round trip; removes its archive and restored tree."""
    images = len(image_files(folder))
    files, bytes_in = _tree_bytes(folder)
    _, restored = _tree_bytes(dest)
    stored = archive.stat().st_size
    shutil.rmtree(dest)
    archive.unlink()
    return {
        "tool": tool,
        "command": command,
        "files": files,
        "images": images,
        "bytes_in": bytes_in,
        "bytes_stored": stored,
        "bytes_restored": restored,
        "ratio": bytes_in / stored,
        "pack_s": pack_s,
        "unpack_s": unpack_s,
        "pack_images_s": images / pack_s,
        "unpack_images_s": images / unpack_s,
    }


def run_dataset(folder: Path, workdir: Path, quality: int, entropy: str, device: str, threads: int) -> dict:
    """Both round trips on ``folder``; aezip runs with ``threads`` torch threads."""
    return {
        "folder": str(folder),
        "aezip": aezip_roundtrip(folder, workdir, quality, entropy, device, threads),
        "tar_zstd": tar_zstd_roundtrip(folder, workdir),
    }
