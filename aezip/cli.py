"""The ``aezip`` command line: pack, unpack, list, info, verify, train.

Failures print one line (``Error: …``) and exit 1; bad usage exits 2 (click's convention).
"""

from __future__ import annotations

import functools
import json
import shlex
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from aezip import __version__
from aezip.errors import AezipError


def _fail_cleanly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn aezip and OS errors into one-line click errors (exit 1) instead of tracebacks."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AezipError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyError as exc:
            raise click.ClickException(str(exc.args[0]) if exc.args else "not found") from None
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from None
        except MemoryError:
            raise click.ClickException("out of memory") from None

    return wrapper


@contextmanager
def _progress(total: int, label: str) -> Iterator[Callable[[str], None] | None]:
    """A progress bar on a terminal (stderr), nothing otherwise."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="file", disable=None, leave=False, dynamic_ncols=True)
    try:
        yield (lambda _name: bar.update(1)) if not bar.disable else None
    finally:
        bar.close()


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _command_line(prefix: str, ctx: click.Context) -> str:
    """The invocation as a command line, rebuilt from the parsed parameters (for model cards)."""
    parts = [prefix]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        source = ctx.get_parameter_source(param.name or "")
        if value is None or value is False or source == click.core.ParameterSource.DEFAULT:
            continue
        flag = max(param.opts, key=len) if isinstance(param, click.Option) else ""
        parts.append(flag if value is True else f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aezip")
def main() -> None:
    """aezip: learned compression for image datasets."""


model_option = click.option(
    "--model",
    "models",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Model file (default: the model shipped with aezip). For unpacking, may be repeated.",
)
threads_option = click.option(
    "--threads", type=click.IntRange(1), help="CPU threads for the network (default: torch's choice)."
)
device_option = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where the network runs.",
)


@main.command("pack")
@click.argument("src", type=click.Path(exists=True, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-q", "--quality", type=click.IntRange(1, 8), default=6, show_default=True, help="1 (smallest) .. 8 (best)."
)
@click.option(
    "--entropy",
    type=click.Choice(["auto", "ans", "zstd"]),
    default="auto",
    show_default=True,
    help="Latent coder: learned tables with ANS, plain zstd, or auto (the shorter of the two, per image).",
)
@model_option
@device_option
@threads_option
@_fail_cleanly
def pack_cmd(
    src: Path, out: Path, quality: int, entropy: str, models: tuple[Path, ...], device: str, threads: int | None
) -> None:
    """Pack the folder (or file) SRC into the archive OUT."""
    _set_threads(threads)
    from aezip.codec import Codec
    from aezip.pack import collect, pack

    if len(models) > 1:
        raise click.BadParameter("give one --model for packing", param_hint="--model")
    codec = Codec(quality=quality, device=device, model=models[0] if models else None, entropy=entropy)
    start = time.perf_counter()
    files = collect(src, exclude=out)
    with _progress(len(files), "pack") as progress:
        summary = pack(src, out, codec, progress, files=files)
    seconds = time.perf_counter() - start
    click.echo(
        f"packed {summary.files} files ({summary.images} coded images): {_human(summary.bytes_in)} → "
        f"{_human(summary.bytes_out)}, ratio {summary.ratio:.2f}x, {seconds:.1f} s"
    )


@main.command("unpack")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["original", "png"]),
    default="original",
    show_default=True,
    help="Restore images in their original format, or as PNG.",
)
@model_option
@device_option
@threads_option
@_fail_cleanly
def unpack_cmd(archive: Path, dest: Path, fmt: str, models: tuple[Path, ...], device: str, threads: int | None) -> None:
    """Restore every file of ARCHIVE under DEST."""
    _set_threads(threads)
    from aezip.archive import Archive
    from aezip.pack import unpack

    start = time.perf_counter()
    with Archive(archive, device=device, models=list(models)) as arc, _progress(len(arc), "unpack") as progress:
        summary = unpack(arc, dest, fmt, progress)
    seconds = time.perf_counter() - start
    click.echo(
        f"restored {summary.files} files ({summary.images} decoded images) to {dest}, "
        f"{_human(summary.bytes_out)}, {seconds:.1f} s"
    )


@main.command("list")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per member, as a JSON array.")
@_fail_cleanly
def list_cmd(archive: Path, as_json: bool) -> None:
    """List the members of ARCHIVE."""
    from aezip.container import ArchiveReader

    with ArchiveReader(archive) as reader:
        rows = [
            {
                "name": m.name,
                "kind": m.kind.name.lower(),
                "size": m.original_size,
                "stored": m.length,
                "mode": oct(m.mode),
                "mtime_ns": m.mtime_ns,
            }
            for m in reader.members
        ]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        click.echo(f"{r['kind']:5} {r['size']:>12} {r['stored']:>12}  {r['name']}")


@main.command("info")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_fail_cleanly
def info_cmd(archive: Path) -> None:
    """Summarise ARCHIVE: format version, members, sizes, models and qualities used."""
    from aezip.codec import parse_header
    from aezip.container import ArchiveReader, MemberKind
    from aezip.entropy import NAMES

    with ArchiveReader(archive) as reader:
        images = [m for m in reader.members if m.kind == MemberKind.IMAGE]
        headers = [parse_header(reader.read_payload(m))[0] for m in images]
        total_in = sum(m.original_size for m in reader.members)
        version = reader.version
    size = archive.stat().st_size
    click.echo(f"archive:   {archive} (format {version[0]}.{version[1]})")
    stored = len(reader.members) - len(images)
    click.echo(f"members:   {len(reader.members)} ({len(images)} coded images, {stored} stored losslessly)")
    click.echo(f"size:      {_human(total_in)} → {_human(size)} (ratio {total_in / max(size, 1):.2f}x)")
    for label, counter in (
        ("models", Counter(h.model_id.hex() for h in headers)),
        ("quality", Counter(str(h.quality) for h in headers)),
        ("entropy", Counter(NAMES[h.entropy] for h in headers)),
    ):
        if counter:
            click.echo(f"{label + ':':10} " + ", ".join(f"{k} ×{v}" for k, v in sorted(counter.items())))


@main.command("verify")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@model_option
@device_option
@threads_option
@_fail_cleanly
def verify_cmd(archive: Path, models: tuple[Path, ...], device: str, threads: int | None) -> None:
    """Check every checksum of ARCHIVE and that every member decodes."""
    _set_threads(threads)
    from aezip.archive import Archive
    from aezip.pack import verify

    with Archive(archive, device=device, models=list(models)) as arc, _progress(len(arc), "verify") as progress:
        summary = verify(arc, progress)
    click.echo(f"ok: {summary.files} members ({summary.images} images) verified")


@main.command("train")
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="Folder of training images.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Model file to write (.safetensors); the card goes beside it (.json).",
)
@click.option(
    "--val",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Validation folder: measured through the real codec at the end.",
)
@click.option("--steps", type=click.IntRange(1), default=100_000, show_default=True)
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), help="Stop after this wall time.")
@click.option("--batch", type=click.IntRange(1), default=8, show_default=True)
@click.option("--crop", type=click.IntRange(16), default=128, show_default=True)
@click.option("--lr", type=float, default=1e-4, show_default=True)
@click.option("--levels", type=click.IntRange(1, 6), default=4, show_default=True)
@click.option("--channels", type=click.IntRange(1), default=64, show_default=True)
@click.option("--bottleneck", type=click.IntRange(1), default=96, show_default=True)
@click.option("--lambdas", help="Comma-separated λ per quality (default: the 8-step ladder).")
@click.option("--loss", type=click.Choice(["mse", "bce"]), default="mse", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@click.option("--resume", is_flag=True, help="Continue from OUT.ckpt.")
@click.option(
    "--init",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Start from a trained model file (fine-tuning; cumulative steps carry over).",
)
@click.option("--val-limit", type=click.IntRange(1), help="Use only the first N validation images.")
@click.option("--threads", type=click.IntRange(1), help="CPU threads for torch.")
@_fail_cleanly
def train_cmd(**kw: Any) -> None:
    """Train a variable-rate model on a folder of images."""
    from aezip.train.trainer import TrainOptions, train

    kw["command"] = _command_line("aezip train", click.get_current_context())
    lambdas = kw.pop("lambdas")
    if lambdas:
        try:
            kw["lambdas"] = tuple(float(v) for v in lambdas.split(","))
        except ValueError:
            raise click.BadParameter("expected numbers separated by commas", param_hint="--lambdas") from None
    out = train(TrainOptions(**kw))
    click.echo(f"wrote {out} and {out.name}.json")
