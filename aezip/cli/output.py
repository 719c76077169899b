"""What the commands print: counts, sizes, the pack summary and lists of files skipped or kept."""

from __future__ import annotations

from typing import Any

import click


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """``1 file``, ``2 files``."""
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def report_files(title: str, items: list[tuple[str, str]], limit: int = 20) -> None:
    """Name what was skipped or kept as is, on stderr, after the summary."""
    if not items:
        return
    click.echo(f"{title} ({len(items)}):", err=True)
    for name, why in items[:limit]:
        click.echo(f"  {name}: {why}", err=True)
    if len(items) > limit:
        click.echo(f"  … and {len(items) - limit} more", err=True)


def human_bytes(n: float) -> str:
    """``512 B``, ``3.4 MiB``: a byte count for people (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def echo_pack_summary(summary: Any, where: str, seconds: float, before: list[str], after: list[str]) -> None:
    """The summary line of a pack (counts, sizes, ratio, time), the files stored byte for byte counted by
    reason, then who was skipped or kept as is."""
    extras = [*before]
    extras += [f"{len(summary.skipped)} skipped"] if summary.skipped else []
    extras += [f"{len(summary.stored)} unreadable kept as is"] if summary.stored else []
    extras += after
    click.echo(
        f"packed {counted(summary.files, 'file')} ({counted(summary.images, 'coded image')})"
        + "".join(f", {e}" for e in extras)
        + f" into {where}: {human_bytes(summary.bytes_in)} → {human_bytes(summary.bytes_out)}, "
        f"ratio {summary.ratio:.2f}x, {seconds:.1f} s"
    )
    if summary.kept:
        reasons = sorted(summary.kept.items(), key=lambda kv: (-kv[1], kv[0]))
        click.echo(f"stored byte for byte: {', '.join(f'{label} ×{n}' for label, n in reasons)} (see aezip list)")
    report_files("skipped", summary.skipped)
    report_files("stored byte for byte (unreadable images)", summary.stored)
