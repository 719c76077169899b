"""``aezip pack`` into a sharded dataset (``--shard-size``, ``--shard-images``, ``--append``): the CLI side."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from aezip.cli.output import counted, echo_pack_summary, report_files
from aezip.errors import AezipError

if TYPE_CHECKING:
    from aezip.codec.quality import QualityTarget


#: Why ``-`` is a usage error: aezip reads and writes seekable files and folders, never stdin or stdout.
DASH_REFUSED = "'-' is not a file name here: aezip does not read stdin or write stdout; name a file or folder"


class OutputPath(click.Path):
    """A file or folder to write (``click.Path``), never ``-``."""

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        if str(value) == "-":
            self.fail(DASH_REFUSED, param, ctx)
        return super().convert(value, param, ctx)


class ArchiveArgument(click.ParamType):
    """An archive, a manifest or dataset folder that exists, or an fsspec URL (``s3://…``) left as text."""

    name = "archive"
    exists = staticmethod(os.path.lexists)

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        if isinstance(value, Path):
            return value
        text = str(value)
        if text == "-":
            self.fail(DASH_REFUSED, param, ctx)
        if "://" in text:
            return text
        if not self.exists(text):
            self.fail(f"{text!r} does not exist.", param, ctx)
        return Path(text)


class SourceArgument(ArchiveArgument):
    """What ``pack`` reads: a file or folder that exists (links followed), or an fsspec URL left as text."""

    name = "source"
    exists = staticmethod(os.path.exists)


def _parse_storage_options(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> None:
    """``--storage-option k=v`` (repeatable) into ``ctx.meta``; values are JSON when they parse (true, 3), else text."""
    options: dict[str, object] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param=param)
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    ctx.meta["aezip.storage_options"] = options or None


storage_option = click.option(
    "--storage-option",
    multiple=True,
    metavar="KEY=VALUE",
    expose_value=False,
    callback=_parse_storage_options,
    help="Option for the fsspec store of a URL (e.g. anon=true, endpoint_url=...); one KEY=VALUE per use.",
)


def storage_options() -> dict | None:
    """The ``--storage-option`` values of the running command."""
    return click.get_current_context().meta.get("aezip.storage_options")


def shard_size_option(text: str | None) -> int | None:
    """``--shard-size`` as bytes (a usage error, exit 2, when it is not a size)."""
    if text is None:
        return None
    from aezip.store.shards import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--shard-size") from None


def pack_shards_cmd(
    src: Path | str,
    out: str,
    *,
    quality: int,
    entropy: str,
    on_error: str,
    force: bool,
    model: Path | None,
    embed_model: bool,
    device: str,
    jobs: int,
    shard_size: str | None,
    shard_images: int | None,
    engine: str,
    append: bool,
    as_json: bool,
    target: QualityTarget | None = None,
) -> None:
    """Pack SRC into the dataset folder OUT (shards + manifest.json) and print the summary."""
    from aezip.loader.export import expanded_tar, is_tar_input
    from aezip.store.executors import make_executor
    from aezip.store.shards import CodecSpec, pack_sharded

    if append and force:
        raise click.UsageError("--append and --force exclude each other")
    dst: Path | str = out if "://" in out else Path(out)
    if isinstance(dst, Path) and dst.exists() and not dst.is_dir():
        raise click.ClickException(f"{dst} exists and is not a folder (a sharded dataset is a folder)")
    size = shard_size_option(shard_size)
    spec = CodecSpec(quality, entropy, str(model) if model else None, "cpu" if device == "auto" else device)
    if out.startswith("memory://") or str(src).startswith("memory://"):
        jobs = 1  # a memory:// store lives in this process only: worker processes could not use it
    executor = make_executor(engine, jobs)
    ctx = click.get_current_context()
    tar_skipped: list[tuple[str, str]] = []
    if isinstance(src, Path) and is_tar_input(src):
        near = dst / "manifest.json" if isinstance(dst, Path) else None
        src, tar_skipped = ctx.with_resource(expanded_tar(src, near))
    from tqdm import tqdm

    start = time.perf_counter()
    with tqdm(desc="pack", unit="file", disable=None, leave=False, dynamic_ncols=True) as bar:
        result = pack_sharded(
            src,
            dst,
            spec,
            shard_bytes=size,
            shard_images=shard_images,
            executor=executor,
            on_error=on_error,
            force=force,
            append=append,
            progress=bar.update,
            embed_model=embed_model,
            storage_options=storage_options(),
            target=target,
        )
    seconds = time.perf_counter() - start
    s = result.summary
    s.skipped[:0] = tar_skipped
    totals = result.manifest.totals()
    if as_json:
        body = {
            "manifest": str(result.path),
            "shards": totals["shards"],
            "written": result.written,
            "reused": result.reused,
            "kept": result.kept,
            "files": s.files,
            "images": s.images,
            "bytes_in": s.bytes_in,
            "bytes_out": s.bytes_out,
            "seconds": round(seconds, 3),
            "files_per_second": round(s.files / seconds, 2) if seconds else None,
            "already_present": result.present,
            "skipped": [list(x) for x in s.skipped],
            "stored": [list(x) for x in s.stored],
            "stored_by_reason": dict(sorted(s.kept.items())),
            "below_floor": [list(x) for x in s.below_floor],
        }
        click.echo(json.dumps(body, indent=1))
        return

    how = f"{len(result.written)} written, {len(result.reused)} reused"
    how += f", {len(result.kept)} kept from before" if result.kept else ""
    after = [f"{result.present} already in the dataset"] if result.present else []
    where = f"{result.path} ({counted(totals['shards'], 'shard')}: {how})"
    after += [f"{len(s.below_floor)} below the PSNR floor"] if s.below_floor else []
    echo_pack_summary(s, where, seconds, [], after)
    floor = target.min_psnr if target is not None else None
    report_files(f"below the {floor:g} dB floor" if floor else "below the floor", s.below_floor)


def check_manifest_checksums(path: Path | str) -> int:
    """For ``verify``: the sha256 of every shard against the manifest (0 for a one-file archive)."""
    from aezip.store.manifest import check_checksums, is_manifest_path

    if not is_manifest_path(path, storage_options()):
        return 0
    try:
        return check_checksums(path, storage_options())
    except FileNotFoundError as exc:
        raise AezipError(f"shard missing: {exc.filename}") from None
