"""How the command line fails (issue 29): quiet on a closed pipe, errors that name the file, '-' refused,
unreachable stores in one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from aezip.cli.app import main

GOLDEN = Path(__file__).parent / "data" / "golden-v2" / "archive.aez"


@pytest.mark.skipif(os.name != "posix", reason="needs a POSIX pipe")
def test_list_into_a_closed_pipe_exits_quietly(tmp_path: Path) -> None:
    """``aezip list X | head`` once head has gone: no "Error: Broken pipe", the exit status of a tool
    SIGPIPE ends (128 + 13)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "aezip", "list", str(GOLDEN)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 141


def _damaged(tmp_path: Path) -> dict[str, Path]:
    data = GOLDEN.read_bytes()
    flipped = bytearray(data)
    flipped[200] ^= 0xFF  # inside the first image's payload
    out = {"truncated": data[: len(data) // 2], "magic": b"XXXX" + data[4:], "crc": bytes(flipped)}
    paths = {}
    for kind, body in out.items():
        paths[kind] = tmp_path / f"{kind}.aez"
        paths[kind].write_bytes(body)
    return paths


@pytest.mark.parametrize("command", ["list", "info", "verify", "unpack"])
def test_errors_name_the_archive(command: str, tmp_path: Path, runner: CliRunner) -> None:
    for kind, path in _damaged(tmp_path).items():
        args = [command, str(path)] + ([str(tmp_path / f"out-{kind}")] if command == "unpack" else [])
        if kind == "crc" and command in ("list", "info"):
            continue  # they read no image payload: the damage is found by verify and unpack
        result = runner.invoke(main, args)
        assert result.exit_code == 1, (kind, result.output)
        assert str(path) in result.output, (kind, result.output)
        assert result.output.count("\n") == 1 and "Traceback" not in result.output, result.output


def test_copy_of_golden_is_readable(tmp_path: Path, runner: CliRunner) -> None:
    copy = tmp_path / "ok.aez"
    shutil.copy(GOLDEN, copy)
    assert runner.invoke(main, ["verify", str(copy)]).exit_code == 0


@pytest.mark.parametrize(
    "args",
    [
        ["pack", "{src}", "-"],
        ["pack", "-", "{tmp}/x.aez"],
        ["unpack", "{arc}", "-"],
        ["unpack", "-", "{tmp}/out"],
        ["export", "{arc}", "-", "--format", "imagefolder"],
        ["list", "-"],
        ["info", "-"],
        ["verify", "-"],
        ["report", "-"],
    ],
)
def test_dash_is_refused_as_a_file_name(args: list[str], tmp_path: Path, runner: CliRunner) -> None:
    """'-' is not read as stdin or written as stdout: a usage error, and no file or folder named '-'."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    (tmp_path / "-").mkdir()  # even where a folder '-' exists, '-' stays refused
    filled = [a.format(src=src, tmp=tmp_path, arc=GOLDEN) for a in args]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = runner.invoke(main, filled)
    finally:
        os.chdir(cwd)
    assert result.exit_code == 2, result.output
    assert "'-'" in result.output
    assert list((tmp_path / "-").iterdir()) == []
