"""Parallelism across images: an ordered map over a thread pool.

Measured on a 2-core CPU, two intra-op threads on one image are no faster than one, so ``pack``,
``unpack`` and ``verify`` run one image per worker thread, each with one intra-op thread (the
convolutions, zstd, ANS and Pillow's codecs release the GIL). Results come back in input order,
so output order and bytes never depend on the number of jobs.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    jobs: int,
    cost: Callable[[T], int] | None = None,
    budget: int = 0,
) -> Iterator[R]:
    """``fn(item)`` for every item, computed by up to ``jobs`` threads, yielded in input order.

    ``items`` is consumed lazily in the calling thread, at most ``2 * jobs`` ahead of what has
    been yielded. With ``cost`` and ``budget``, an item is only started while the started-but-not-
    yielded items cost at most ``budget`` (one item always may), which bounds memory when items
    are large images. ``jobs <= 1`` runs everything in the calling thread. An exception from ``fn``
    is raised when its item's turn comes; items not yet started are then dropped.
    """
    if jobs <= 1:
        for item in items:
            yield fn(item)
        return
    pending: deque[tuple[Future[R], int]] = deque()
    in_flight = 0
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="aezip")
    try:
        for item in items:
            weight = cost(item) if cost else 0
            while pending and (len(pending) >= 2 * jobs or (budget and in_flight + weight > budget)):
                future, done = pending.popleft()
                in_flight -= done
                yield future.result()
            pending.append((pool.submit(fn, item), weight))
            in_flight += weight
        while pending:
            future, done = pending.popleft()
            in_flight -= done
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
