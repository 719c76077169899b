"""The ``aezip`` command line: pack, unpack, list, info, verify, train.

Failures print one line (``Error: …``) and exit 1; bad usage exits 2 (click's convention).
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from aezip import __version__
from aezip.cli.output import counted, echo_pack_summary, human_bytes, report_files
from aezip.cli.shards import ArchiveArgument, OutputPath, SourceArgument, storage_option, storage_options
from aezip.errors import AezipError
from aezip.model.runtime import keep_freed_memory, one_blas_thread


class Interrupted(KeyboardInterrupt):
    """Raised by the signal handlers, so cleanup (``finally``, context managers) runs as on Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


#: ``train --variant`` choices, spelled out so ``--help`` needs no torch; a test checks they equal
#: :data:`aezip.train.step.VARIANT_CHOICES`.
TRAIN_VARIANT_CHOICES = ("auto", "eager", "fp32", "compile", "graphs")

_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def _on_signal(signum: int, frame: object) -> None:
    for sig in _SIGNALS:  # a second signal must not interrupt the cleanup of the first
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


@contextmanager
def _clean_up_on_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` while a command runs (then the old handlers return)."""
    previous = {}
    try:
        for sig in _SIGNALS:
            previous[sig] = signal.signal(sig, _on_signal)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _fail_cleanly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn aezip and OS errors into one-line click errors (exit 1) instead of tracebacks.

    SIGINT, SIGTERM and SIGHUP remove temporary files and exit 128 + the signal number (130 for Ctrl-C).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _clean_up_on_signals():
                return func(*args, **kwargs)
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            click.echo(f"Aborted by {signal.Signals(signum).name}; temporary files removed.", err=True)
            raise click.exceptions.Exit(128 + signum) from None
        except AezipError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyError as exc:
            raise click.ClickException(str(exc.args[0]) if exc.args else "not found") from None
        except BrokenPipeError:
            _quiet_broken_pipe()
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            raise click.ClickException(f"{exc.strerror or exc}{where}") from None
        except MemoryError:
            raise click.ClickException("out of memory") from None
        except RuntimeError as exc:  # torch reports failed allocations as RuntimeError (OutOfMemoryError)
            if "out of memory" in str(exc) or "allocate" in str(exc):
                raise click.ClickException("out of memory") from None
            raise

    return wrapper


def _quiet_broken_pipe() -> None:
    """Whoever read stdout has gone (``aezip list X | head``): exit as SIGPIPE ends a tool (128 + 13), silently."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # the interpreter's last flush of stdout must not fail again
    except OSError:
        pass
    raise click.exceptions.Exit(128 + getattr(signal, "SIGPIPE", 13))


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
    keep_freed_memory()
    one_blas_thread()  # images are coded in parallel, one per job


model_option = click.option(
    "--model",
    "models",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Extra model file for images not coded with the shipped model; may be repeated.",
)
threads_option = click.option(
    "--threads", type=click.IntRange(1), help="CPU threads for the network (default: torch's choice)."
)
jobs_option = click.option(
    "-j",
    "--jobs",
    type=click.IntRange(1),
    help="Images coded at once, one CPU thread each (default: the usable cores; 1 with --threads or on CUDA). "
    "Output order and bytes do not depend on it.",
)


def _jobs(jobs: int | None, threads: int | None, device: str) -> int:
    """--jobs as given, else one job per usable core on the CPU (one job when --threads or CUDA is chosen)."""
    if jobs:
        return jobs
    from aezip.archive.parallel import usable_cpus
    from aezip.codec.codec import device_type

    return 1 if threads or device_type(device) == "cuda" else usable_cpus()


device_option = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where the network runs.",
)


def _archive_path(src: Path | str, out: str) -> tuple[Path, bool]:
    """OUT as given, or ``OUT/SRC.aez`` when OUT ends with a slash or is a folder; and whether OUT is a folder."""
    path = Path(out)
    if out.endswith(("/", os.sep)) or path.is_dir():
        base = (src.rstrip("/").rsplit("/", 1)[-1] if isinstance(src, str) else src.resolve().name) or "archive"
        return path / f"{base}.aez", True
    return path, False


@main.command("pack")
@click.argument("src", type=SourceArgument())
@click.argument("out", type=OutputPath())
@click.option(
    "-q", "--quality", type=click.IntRange(1, 8), default=6, show_default=True, help="1 (smallest) .. 8 (best)."
)
@click.option(
    "--entropy",
    type=click.Choice(["auto", "ans-ctx", "ans", "zstd"]),
    default="auto",
    show_default=True,
    help="Latent coder: ans-ctx (learned context-adaptive tables, the smallest), ans (learned per-channel "
    "tables), plain zstd, or auto (the shortest of them, per image).",
)
@click.option(
    "--on-error",
    type=click.Choice(["fail", "skip", "store"]),
    default="fail",
    show_default=True,
    help="An input that cannot be read: stop before encoding anything (fail), leave it out (skip), "
    "or keep an unreadable image byte for byte (store). Checked before any encoding.",
)
@click.option("-f", "--force", is_flag=True, help="Overwrite OUT if it exists.")
@click.option(
    "--min-psnr",
    type=click.FloatRange(min=0, min_open=True),
    help="Per image, the lowest quality whose reconstruction reaches this PSNR (dB), found with the real "
    "decoder in at most 4 trials; replaces -q. Records each image's PSNR and bpp (see aezip report).",
)
@click.option(
    "--max-bpp",
    type=click.FloatRange(min=0, min_open=True),
    help="Per image, no quality above the one whose stream fits this many bits per pixel; with --min-psnr, "
    "the floor is sought under this cap.",
)
@click.option(
    "--below-floor",
    type=click.Choice(["best", "lossless", "fail"]),
    default="best",
    show_default=True,
    help="An image no allowed quality brings to --min-psnr: code it at the best allowed quality, store it "
    "losslessly, or stop with an error.",
)
@click.option(
    "--measure",
    is_flag=True,
    help="Decode each coded image once more to record its PSNR and bpp in the archive (for aezip report).",
)
@click.option(
    "--no-embed-model",
    "embed_model",
    is_flag=True,
    flag_value=False,
    default=True,
    help="With --model FILE (a model aezip does not ship): do not store FILE in the archive "
    "(about 10 MB); the archive then decodes only where FILE is passed with --model.",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Model file to code images with (default: the model shipped with aezip); give it once.",
)
@device_option
@threads_option
@jobs_option
@click.option(
    "--shard-size",
    metavar="SIZE",
    help="Write a sharded dataset: OUT is a folder of shard-NNNNN.aez files of at most SIZE input bytes "
    "each (1GB, 512MiB, ...) and a manifest.json; --jobs shards are packed at once, one process each.",
)
@click.option("--shard-images", type=click.IntRange(1), help="Sharded dataset with at most N files per shard.")
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where shards are packed: local processes, or Ray tasks (RAY_ADDRESS, else a local Ray; aezip[ray]).",
)
@click.option("--append", is_flag=True, help="Add the files of SRC not yet in the sharded dataset OUT as new shards.")
@click.option("--json", "as_json", is_flag=True, help="Sharded datasets: print the summary as JSON.")
@storage_option
@_fail_cleanly
def pack_cmd(
    src: Path | str,
    out: str,
    quality: int,
    entropy: str,
    on_error: str,
    force: bool,
    min_psnr: float | None,
    max_bpp: float | None,
    below_floor: str,
    measure: bool,
    embed_model: bool,
    models: tuple[Path, ...],
    device: str,
    threads: int | None,
    jobs: int | None,
    shard_size: str | None,
    shard_images: int | None,
    engine: str,
    append: bool,
    as_json: bool,
) -> None:
    """Pack the folder (or file) SRC into the archive OUT.

    A tar file SRC (.tar, .tar.gz, .tgz, ...: e.g. a WebDataset shard) is packed as the files it
    holds. OUT ending in a slash, or an existing folder, receives SRC's name with .aez. An existing OUT
    is never replaced without --force. Symbolic links are stored as links when they point inside
    SRC (never followed), otherwise skipped and reported; empty folders are kept.

    With --shard-size or --shard-images, OUT is a dataset folder (shards and manifest.json, written
    last); running the same command again keeps the shards that are complete and redoes the rest.

    SRC and a dataset OUT may be fsspec URLs (s3://bucket/photos/, memory://...; see
    --storage-option): a sharded pack copies each shard's files to a temporary folder as it packs
    them, a one-file pack copies the whole tree first.
    """
    if len(models) > 1:
        raise click.BadParameter("give one --model for packing", param_hint="--model")
    from aezip.codec.quality import QualityTarget

    target = QualityTarget(min_psnr, max_bpp, below_floor) if min_psnr or max_bpp or measure else None
    if shard_size or shard_images or append:
        from aezip.cli.shards import pack_shards_cmd

        _set_threads(threads)
        options = {"quality": quality, "entropy": entropy, "on_error": on_error, "force": force}
        options.update(model=models[0] if models else None, device=device, embed_model=embed_model, target=target)
        options.update(jobs=_jobs(jobs, threads, device), shard_size=shard_size, shard_images=shard_images)
        return pack_shards_cmd(src, out, engine=engine, append=append, as_json=as_json, **options)
    if engine != "local" or as_json:
        raise click.UsageError("--engine and --json are for sharded datasets: add --shard-size or --shard-images")
    if "://" in out:
        raise click.UsageError("a URL as OUT is for sharded datasets: add --shard-size or --shard-images")
    archive, into_folder = _archive_path(src, out)
    from aezip.loader.export import expanded_tar, is_tar_input, tar_stem

    from_tar = isinstance(src, Path) and is_tar_input(src)
    if from_tar and into_folder:
        archive = archive.with_name(f"{tar_stem(src)}.aez")
    if archive.is_dir():
        raise click.ClickException(f"{archive} is a folder")
    if os.path.lexists(archive) and not force:
        raise click.ClickException(f"{archive} already exists (use --force to overwrite it)")
    _set_threads(threads)
    from aezip.archive.pack import collect, pack
    from aezip.codec.codec import Codec

    codec = Codec(quality=quality, device=device, model=models[0] if models else None, entropy=entropy)
    start = time.perf_counter()
    ctx = click.get_current_context()
    if isinstance(src, str):  # a URL: the tree is copied here first (see aezip.store.remote.staged_source)
        from aezip.store.remote import staged_source

        src = ctx.with_resource(staged_source(src, storage_options()))
    src, tar_skipped = ctx.with_resource(expanded_tar(src, archive)) if from_tar else (src, [])
    found = collect(src, exclude=archive)
    made_folder = into_folder and not archive.parent.exists()
    if made_folder:
        archive.parent.mkdir(parents=True)
    try:
        with _progress(len(found.entries), "pack") as progress:
            n_jobs = _jobs(jobs, threads, device)
            summary = pack(
                src,
                archive,
                codec,
                progress,
                files=found,
                on_error=on_error,
                overwrite=force,
                jobs=n_jobs,
                embed_model=embed_model,
                target=target,
            )
    except BaseException:
        if made_folder:
            archive.parent.rmdir()
        raise
    summary.skipped[:0] = tar_skipped
    seconds = time.perf_counter() - start
    before = [counted(summary.links, "link")] if summary.links else []
    before += [counted(summary.folders, "empty folder")] if summary.folders else []
    after = ["the model embedded"] if summary.embedded_models else []
    after += [f"{len(summary.below_floor)} below the PSNR floor"] if summary.below_floor else []
    echo_pack_summary(summary, str(archive), seconds, before, after)
    report_files(f"below the {min_psnr:g} dB floor" if min_psnr else "below the floor", summary.below_floor)


@main.command("unpack")
@click.argument("archive", type=ArchiveArgument())
@click.argument("dest", type=OutputPath(file_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["original", "png"]),
    default="original",
    show_default=True,
    help="Restore coded images in their original format, or as PNG. Lossless formats are written "
    "losslessly; JPEG is re-encoded from the reconstruction at --jpeg-quality with 4:4:4 chroma, "
    "so it is usually larger than the original file.",
)
@click.option(
    "--jpeg-quality",
    type=click.IntRange(1, 100),
    default=95,
    show_default=True,
    help="Quality of restored JPEG files (lower: smaller files, more loss on top of the model's).",
)
@click.option("-f", "--force", is_flag=True, help="Replace files that already exist in DEST.")
@click.option("--skip-existing", is_flag=True, help="Keep files that already exist in DEST; restore the rest.")
@model_option
@device_option
@threads_option
@jobs_option
@storage_option
@_fail_cleanly
def unpack_cmd(
    archive: Path,
    dest: Path,
    fmt: str,
    jpeg_quality: int,
    force: bool,
    skip_existing: bool,
    models: tuple[Path, ...],
    device: str,
    threads: int | None,
    jobs: int | None,
) -> None:
    """Restore every file of ARCHIVE under DEST.

    Nothing is written if any member would replace an existing file, unless --force or
    --skip-existing; files appear only after every member has decoded and passed its checks.
    """
    if force and skip_existing:
        raise click.UsageError("--force and --skip-existing exclude each other")
    _set_threads(threads)
    from aezip.archive.pack import unpack
    from aezip.store.sharded import open_archive

    existing = "replace" if force else "skip" if skip_existing else "refuse"
    start = time.perf_counter()
    opened = open_archive(archive, device=device, models=list(models), storage_options=storage_options())
    with opened as arc, _progress(len(arc), "unpack") as progress:
        summary = unpack(
            arc, dest, fmt, progress, existing=existing, jpeg_quality=jpeg_quality, jobs=_jobs(jobs, threads, device)
        )
    seconds = time.perf_counter() - start
    extras = [counted(summary.links, "link")] if summary.links else []
    extras += [counted(summary.folders, "folder")] if summary.folders else []
    extras += [f"{counted(len(summary.skipped), 'existing file')} kept"] if summary.skipped else []
    click.echo(
        f"restored {counted(summary.files, 'file')} ({counted(summary.images, 'decoded image')})"
        + "".join(f", {e}" for e in extras)
        + f" to {dest}, {human_bytes(summary.bytes_out)}, {seconds:.1f} s"
    )


@main.command("export")
@click.argument("archive", type=ArchiveArgument())
@click.argument("dest", type=OutputPath(file_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["webdataset", "imagefolder"]),
    required=True,
    help="webdataset: tar shards DEST/NAME-000000.tar (KEY.png + KEY.json per image); "
    "imagefolder: the images at their paths (class = folder).",
)
@click.option(
    "--image-format",
    type=click.Choice(["png", "original"]),
    default="png",
    show_default=True,
    help="Coded images as lossless PNG of the reconstruction, or in their original format.",
)
@click.option(
    "--jpeg-quality", type=click.IntRange(1, 100), default=95, show_default=True, help="For --image-format original."
)
@click.option(
    "--shard-size", type=click.IntRange(1), default=10_000, show_default=True, help="Images per WebDataset shard."
)
@click.option(
    "-f", "--force", is_flag=True, help="Write into a DEST folder that is not empty, replacing same-named files."
)
@model_option
@device_option
@threads_option
@storage_option
@_fail_cleanly
def export_cmd(
    archive: Path,
    dest: Path,
    fmt: str,
    image_format: str,
    jpeg_quality: int,
    shard_size: int,
    force: bool,
    models: tuple[Path, ...],
    device: str,
    threads: int | None,
) -> None:
    """Export the images of ARCHIVE to DEST as WebDataset shards or an image folder tree.

    Members that are not images (labels, CSV, links) are left out and counted; aezip unpack
    restores them. Nothing appears in DEST until every image has been written.
    """
    _set_threads(threads)
    from aezip.loader.export import export
    from aezip.store.sharded import open_archive

    start = time.perf_counter()
    opened = open_archive(archive, device=device, models=list(models), storage_options=storage_options())
    with opened as arc, _progress(len(arc), "export") as progress:
        summary = export(
            arc,
            dest,
            fmt,
            image_format=image_format,
            jpeg_quality=jpeg_quality,
            shard_size=shard_size,
            overwrite=force,
            progress=progress,
        )
    seconds = time.perf_counter() - start
    what = counted(summary.files, "shard") if fmt == "webdataset" else counted(summary.files, "file")
    left = f", {summary.left_out} other members left out" if summary.left_out else ""
    click.echo(
        f"exported {counted(summary.images, 'image')} as {what} to {dest}, {human_bytes(summary.bytes_out)}{left}, "
        f"{seconds:.1f} s"
    )


@main.command("list")
@click.argument("archive", type=ArchiveArgument())
@click.option("--json", "as_json", is_flag=True, help="One JSON object per member, as a JSON array.")
@storage_option
@_fail_cleanly
def list_cmd(archive: Path, as_json: bool) -> None:
    """List the members of ARCHIVE: kind, original size, stored size, name.

    A file stored byte for byte (kind raw) is followed by why, in parentheses: not an image,
    16-bit samples, palette, CMYK colour, animation, too large, unreadable image, ... (--json: "reason").
    """
    from aezip.archive.container import MemberKind
    from aezip.archive.reader import member_meta, raw_reason
    from aezip.codec.quality import stats_from_meta
    from aezip.store.manifest import open_reader

    with open_reader(archive, storage_options()) as reader:
        rows = []
        for m in reader.members:
            row: dict[str, Any] = {
                "name": m.name,
                "kind": m.kind.name.lower(),
                "size": m.original_size,
                "stored": m.length,
                "mode": oct(m.mode),
                "mtime_ns": m.mtime_ns,
            }
            if m.kind == MemberKind.LINK:
                row["target"] = reader.read_link(m)
            if m.kind == MemberKind.IMAGE:
                stats = stats_from_meta(member_meta(m), m.name)
                row.update(stats.to_meta() if stats else {})
            if m.kind == MemberKind.RAW:
                row["reason"] = raw_reason(m)
            rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'kind':5} {'size':>12} {'stored':>12}  name")
    for r in rows:
        link = f" -> {r['target']}" if "target" in r else f"  ({r['reason']})" if "reason" in r else ""
        click.echo(f"{r['kind']:5} {r['size']:>12} {r['stored']:>12}  {r['name']}{link}")


@main.command("report")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--worst", type=click.IntRange(0), default=10, show_default=True, help="How many worst images to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write PSNR and bpp histograms (PNG).")
@_fail_cleanly
def report_cmd(archive: Path, worst: int, as_json: bool, plot: Path | None) -> None:
    """Reconstruction report of ARCHIVE: PSNR and bpp spread and the worst-reconstructed images.

    Uses the PSNR and bpp recorded when packing (pack --measure, --min-psnr or --max-bpp); the
    images the model reconstructs worst are the ones least like natural photos (noise,
    screenshots, synthetic or damaged images).
    """
    from aezip.archive.reader import Archive
    from aezip.archive.report import plot as plot_report
    from aezip.archive.report import summarize, to_text

    with Archive(archive) as opened:
        report = summarize(opened, worst=worst)
        if plot is not None:
            plot_report(opened, plot)
    click.echo(json.dumps(report, indent=1) if as_json else to_text(report))


@main.command("info")
@click.argument("archive", type=ArchiveArgument())
@storage_option
@_fail_cleanly
def info_cmd(archive: Path) -> None:
    """Summarise ARCHIVE: format version, members, sizes, models and qualities used."""
    from aezip.archive.container import MemberKind
    from aezip.codec.codec import parse_header
    from aezip.entropy import NAMES
    from aezip.store.manifest import ShardedReader, archive_bytes, open_reader

    with open_reader(archive, storage_options()) as reader:
        images = [m for m in reader.members if m.kind == MemberKind.IMAGE]
        headers = [parse_header(reader.read_payload(m))[0] for m in images]
        files = [m for m in reader.members if m.kind not in (MemberKind.MODEL, MemberKind.CONTEXT)]
        embedded = {bytes.fromhex(m.name)[:16] for m in reader.members if m.kind == MemberKind.MODEL}
        total_in = sum(m.original_size for m in files)
        version = reader.version
        size = archive_bytes(reader)
        shards = len(reader.readers) if isinstance(reader, ShardedReader) else 0
    click.echo(f"archive:   {archive} (format {version[0]}.{version[1]})")
    if shards:
        click.echo(f"shards:    {counted(shards, 'shard')} (manifest version {reader.manifest.version})")
    kinds = Counter(m.kind for m in files)
    parts = [counted(len(images), "coded image"), f"{kinds[MemberKind.RAW]} stored losslessly"]
    parts += [counted(kinds[MemberKind.LINK], "link")] if kinds[MemberKind.LINK] else []
    parts += [counted(kinds[MemberKind.DIR], "folder")] if kinds[MemberKind.DIR] else []
    parts += [counted(len(embedded), "embedded model")] if embedded else []
    click.echo(f"members:   {len(files)} ({', '.join(parts)})")
    click.echo(f"size:      {human_bytes(total_in)} → {human_bytes(size)} (ratio {total_in / max(size, 1):.2f}x)")
    for label, counter in (
        ("models", Counter(_model_label(h.model_id, h.model_id in embedded) for h in headers)),
        ("quality", Counter(str(h.quality) for h in headers)),
        ("entropy", Counter(NAMES[h.entropy] for h in headers)),
    ):
        if counter:
            click.echo(f"{label + ':':10} " + ", ".join(f"{k} ×{v}" for k, v in sorted(counter.items())))


def _model_label(model_id: bytes, embedded: bool = False) -> str:
    """A model's shipped name and id prefix, or the id and where its file is for a model aezip does not ship."""
    from aezip.model.registry import model_name

    name = model_name(model_id)
    if name:
        return f"{name} ({model_id.hex()})"
    return f"{model_id.hex()} ({'embedded in the archive' if embedded else 'not shipped: decode with --model FILE'})"


@main.command("verify")
@click.argument("archive", type=ArchiveArgument())
@model_option
@device_option
@threads_option
@jobs_option
@storage_option
@_fail_cleanly
def verify_cmd(archive: Path, models: tuple[Path, ...], device: str, threads: int | None, jobs: int | None) -> None:
    """Check every checksum of ARCHIVE and that every member decodes."""
    _set_threads(threads)
    from aezip.archive.pack import verify
    from aezip.cli.shards import check_manifest_checksums
    from aezip.store.sharded import open_archive

    check_manifest_checksums(archive)
    opened = open_archive(archive, device=device, models=list(models), storage_options=storage_options())
    with opened as arc, _progress(len(arc), "verify") as progress:
        summary = verify(arc, progress, jobs=_jobs(jobs, threads, device))
    members = summary.files + summary.links + summary.folders
    click.echo(f"ok: {counted(members, 'member')} ({counted(summary.images, 'coded image')}) verified")


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
@click.option(
    "--steps",
    type=click.IntRange(1),
    default=20_000,
    show_default=True,
    help="Optimizer steps (the shipped model: 21,287 steps, 9.5 min on one H100 GPU at batch 64).",
)
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), help="Stop after this wall time.")
@click.option(
    "--batch",
    type=click.IntRange(1),
    default=16,
    show_default=True,
    help="Crops per step; a multiple of the number of qualities trains them all in one batched pass.",
)
@click.option("--crop", type=click.IntRange(16), default=128, show_default=True, help="Side of the random crops, px.")
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Adam learning rate (10x lower at the end).")
@click.option(
    "--lr-drop-at",
    type=click.FloatRange(0, 1),
    default=0.8,
    show_default=True,
    help="Fraction of the run (steps or minutes) after which the learning rate is 10x lower.",
)
@click.option(
    "--rescale",
    type=click.FloatRange(0, 1),
    default=0.25,
    show_default=True,
    help="Share of batches whose source images are first downscaled by 0.75-1 (augmentation).",
)
@click.option(
    "--ema",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.999,
    show_default=True,
    help="Decay of the moving average of the weights that gets exported.",
)
@click.option(
    "--checkpoint-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="Wall time between checkpoints (OUT.ckpt, for --resume).",
)
@click.option(
    "--levels", type=click.IntRange(1, 6), default=4, show_default=True, help="Down-sampling stages (stride 2**levels)."
)
@click.option("--channels", type=click.IntRange(1), default=128, show_default=True, help="Hidden channels per layer.")
@click.option("--bottleneck", type=click.IntRange(1), default=320, show_default=True, help="Latent channels.")
@click.option(
    "--lambdas",
    help="Comma-separated λ per quality (default: the --init model's ladder, else the 8-step ladder). "
    "With --init, a different ladder keeps the transforms and carries gains and priors over.",
)
@click.option("--loss", type=click.Choice(["mse", "bce"]), default="mse", show_default=True, help="Distortion term.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (crops, quality draws, init).")
@device_option
@click.option("--resume", is_flag=True, help="Continue from OUT.ckpt.")
@click.option(
    "--init",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Start from a trained model file (fine-tuning; cumulative steps carry over).",
)
@click.option("--val-limit", type=click.IntRange(1), help="Use only the first N validation images.")
@click.option("--threads", type=click.IntRange(1), help="CPU threads for torch.")
@click.option(
    "--variant",
    type=click.Choice(TRAIN_VARIANT_CHOICES),
    default="eager",
    show_default=True,
    help="How a step runs: eager, fp32, compile (torch.compile), graphs (compiled, CUDA graphs); "
    "auto times the candidates first, as training steps, and trains on with the fastest.",
)
@click.option(
    "--bench-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=45.0,
    show_default=True,
    help="With --variant auto: timed seconds for all candidates together (warm-up not counted).",
)
@click.option(
    "--bench",
    metavar="VARIANT:BATCH,...",
    help="With --variant auto: the candidates (default: eager and fp32 at --batch; eager, compile "
    "and graphs at twice it).",
)
@click.option(
    "--compile-backend",
    default="inductor",
    show_default=True,
    help="torch.compile backend of the compiled variants (tests on a CPU use aot_eager).",
)
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
