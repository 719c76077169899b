"""Speed: encode and decode megapixels per second, aezip beside the Pillow codecs in one run.

Codecs take turns image by image (aezip on each device, then every baseline), so a load spike
on a shared machine slows all of them alike and the ratios to JPEG stay meaningful even when
the absolute numbers do not. Times are in-memory: array → bytes → array, no file I/O. aezip
encodes one image per call; it decodes one image per call on every device, and on CUDA also
all images in one ``decode_many`` call (batched synthesis).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch

from aezip.codec.codec import Codec
from benchmarks.baselines import Baseline
from benchmarks.images import BenchImage


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """``fn(*args)`` and its wall time in seconds."""
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def _entry(codec: str, device: str, threads: int, batch: int, quality: int, times: dict, mp: float) -> dict:
    enc, dec = times.get("encode"), times.get("decode")
    return {
        "codec": codec,
        "device": device,
        "threads": threads,
        "batch": batch,
        "quality": quality,
        "megapixels": mp,
        "encode_s": enc,
        "decode_s": dec,
        "encode_mp_s": mp / enc if enc else None,
        "decode_mp_s": mp / dec if dec else None,
    }


def run_speed(
    images: list[BenchImage],
    baselines: list[Baseline],
    quality: int,
    entropy: str,
    devices: list[str],
    threads: int,
    repeats: int = 1,
) -> dict:
    """Measure every codec on ``images`` ``repeats`` times; returns entries and ratios to JPEG."""
    codecs = {d: Codec(quality=quality, device=d, entropy=entropy) for d in devices}
    first = images[0].rgb
    for codec in codecs.values():
        codec.decode_many([codec.encode(first)])
        if codec.device.type == "cuda":
            torch.cuda.synchronize()
    for b in baselines:
        b.decode(b.encode(first, b.speed_quality, threads))

    times: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    streams: dict[str, list[bytes]] = defaultdict(list)
    for _ in range(repeats):
        for img in images:
            for device, codec in codecs.items():
                data, t = _timed(codec.encode, img.rgb)
                times[f"aezip-{device}"]["encode"] += t
                _, t = _timed(codec.decode_many, [data])
                times[f"aezip-{device}"]["decode"] += t
                if len(streams[device]) < len(images):
                    streams[device].append(data)
            for b in baselines:
                data, t = _timed(b.encode, img.rgb, b.speed_quality, threads)
                times[b.key]["encode"] += t
                _, t = _timed(b.decode, data)
                times[b.key]["decode"] += t

    batched = [d for d in codecs if codecs[d].device.type == "cuda"]
    for device in batched:
        for _ in range(repeats):
            torch.cuda.synchronize()
            _, t = _timed(codecs[device].decode_many, streams[device])
            times[f"aezip-{device}-batched"]["decode"] += t

    mp = repeats * sum(i.pixels for i in images) / 1e6
    torch_threads = torch.get_num_threads()
    entries = {}
    for device in codecs:
        entries[f"aezip-{device}"] = _entry("aezip", device, torch_threads, 1, quality, times[f"aezip-{device}"], mp)
    for device in batched:
        key = f"aezip-{device}-batched"
        entries[key] = _entry("aezip", device, torch_threads, len(images), quality, times[key], mp)
    for b in baselines:
        used = threads if b.thread_option else 1
        entries[b.key] = _entry(b.key, "cpu", used, 1, b.speed_quality, times[b.key], mp)
    return {
        "images": len(images),
        "repeats": repeats,
        "aezip_entropy": entropy,
        "entries": entries,
        "ratios": ratios(entries),
    }


def ratios(entries: dict[str, dict]) -> dict[str, dict[str, float | None]]:
    """aezip speed over each baseline's (aezip MP/s ÷ baseline MP/s), encode and decode."""
    out = {}
    for key, e in entries.items():
        if e["codec"] != "aezip":
            continue
        for other, b in entries.items():
            if b["codec"] == "aezip":
                continue
            pair = {}
            for op in ("encode", "decode"):
                a, r = e[f"{op}_mp_s"], b[f"{op}_mp_s"]
                pair[op] = a / r if a and r else None
            out[f"{key}/{other}"] = pair
    return out
