"""Process-wide settings that make CPU coding faster: glibc keeps freed memory for reuse, and
NumPy's BLAS runs one thread per image while images are decoded in parallel.

The transforms allocate and free buffers of tens of MB per layer. glibc serves every block above
its mmap threshold (at most 32 MiB, adjusted as it goes) with a fresh ``mmap`` and returns it on
``free``, so each layer's output is faulted in page by page again, zero-filled by the kernel:
that cost a quarter of the CPU time of an element-wise GDN step and 3–4 s of system time per
``aezip unpack`` of Kodak. Raising the mmap and trim thresholds lets freed blocks be reused from
the heap; the peak memory stays that of the largest working set (the 64 MP memory test bounds it).
Worker threads share the main heap (one arena): a thread's own arena grows in 64 MiB heaps, so
it served such buffers with ``mmap`` anyway (``unpack --jobs 2`` of Kodak: 2.6–2.8 s of system
time with per-thread arenas, 1.3 s with one).

This changes the whole process's allocator, so the command line and aezip's own worker processes
call :func:`keep_freed_memory`; a program embedding aezip may call it too.

Kept memory fragments: images of different sizes free blocks that the next image's slightly
larger buffers do not fit in, so the heap grows by a buffer now and then, and never shrinks
(``pack`` of 30 photos of about 0.7 MP in mixed shapes: 0.96 GB resident after the first, 1.35 GB
after the last; 0.18 GB of it in use). Between images, :func:`release_freed_memory` hands the
free pages back (``malloc_trim``) once the process holds more than :data:`KEEP_FREED` above what it
held after the last release: enough for the next image to reuse its predecessor's buffers, without
letting the heap grow with the number of images.

:func:`blas_one_thread` is the NumPy decoder's counterpart of
:func:`aezip.model.inference.one_thread`: images are decoded in parallel, one per worker, so each
matrix product runs on one thread (OpenBLAS's own threads would compete with the workers for the
cores), and the decoded pixels do not depend on how many threads BLAS would otherwise use.
Processes that exist to decode images in parallel (the command line, aezip's DataLoader
workers) call :func:`one_blas_thread` once instead, so the limit is not lifted and set again
around every image (which cost 15 % more CPU time on ``unpack --jobs 2`` of Kodak).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: Blocks below this are served from the heap and kept there after ``free``: every buffer of a
#: transform tile (at most 64 MiB) is; image-sized arrays of a large image are mapped and returned
#: when freed, so they do not stay resident. (At 1 GiB, ``pack`` of a 64 MP image peaked at 1.64 GB
#: instead of 1.38 GB; Kodak ``pack`` and ``unpack`` times do not change.)
MMAP_THRESHOLD = 128 << 20
#: Free memory at the top of the heap that glibc keeps instead of returning it to the system.
TRIM_THRESHOLD = (1 << 31) - 1
#: Resident bytes that :func:`release_freed_memory` lets a process grow by between two releases.
KEEP_FREED = 512 << 20

_done = False
_libc: ctypes.CDLL | None = None
_release_lock = threading.Lock()
_resident_after_release: int | None = None


def keep_freed_memory() -> bool:
    """Tell glibc to keep freed blocks up to 128 MiB for reuse, in one heap; True if it took effect.

    A no-op (False) where the C library is not glibc (macOS, Windows, musl).
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_ARENA_MAX, 1))
    _done = all([bool(mallopt(option, value)) for option, value in settings])
    if _done and hasattr(libc, "malloc_trim"):
        global _libc
        _libc = libc
        _libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    return _done


def resident_bytes() -> int:
    """Resident memory of this process (Linux: ``/proc/self/statm``; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_freed_memory(keep: int = KEEP_FREED) -> bool:
    """Call between images: once the process holds more than ``keep`` bytes above what it held after
    the last release (or at the first call), return glibc's free pages to the system.

    Only where :func:`keep_freed_memory` took effect (the setting that keeps them); thread-safe.
    True when it released.
    """
    global _resident_after_release
    if _libc is None:
        return False
    with _release_lock:
        if _resident_after_release is not None and resident_bytes() <= _resident_after_release + keep:
            return False
        _libc.malloc_trim(0)
        _resident_after_release = resident_bytes()
    return True


class SharedSetting:
    """A process-wide setting held while any thread is inside :meth:`held` (re-entrant and
    thread-safe): the first to enter applies it, the last to leave undoes it.

    ``apply`` makes the setting and returns what undoes it. Thread counts of numeric libraries are
    process-wide, so images coded in parallel, each asking for one thread, share one setting.
    """

    def __init__(self, apply: Callable[[], Callable[[], object]]) -> None:
        self._apply = apply
        self._lock = threading.Lock()
        self._users = 0
        self._undo: Callable[[], object] | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._undo = self._apply()
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._undo is not None:
                    self._undo()
                    self._undo = None


@functools.lru_cache(maxsize=1)
def _controller() -> ThreadpoolController:
    return ThreadpoolController()  # finds the BLAS libraries loaded so far (NumPy's, torch's)


_one_blas_thread = SharedSetting(lambda: _controller().limit(limits=1, user_api="blas").restore_original_limits)
_blas_pinned = None


def blas_one_thread() -> contextlib.AbstractContextManager[None]:
    """Run the enclosed NumPy work with one BLAS thread (process-wide; see :class:`SharedSetting`)."""
    return _one_blas_thread.held()


def one_blas_thread() -> None:
    """One BLAS thread for the rest of the process (unless ``OPENBLAS_NUM_THREADS`` says otherwise,
    when NumPy is not loaded yet: then the variable is set, for NumPy to read as it loads)."""
    global _blas_pinned
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    elif _blas_pinned is None:
        _blas_pinned = _controller().limit(limits=1, user_api="blas")
