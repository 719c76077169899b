"""Where shard tasks run: in this process, in a local process pool, or as Ray Core tasks.

Every executor has one method, :meth:`Executor.run`, which runs ``fn`` on every task and yields
``(task number, result)`` as tasks finish (in any order); the first failure is raised and the
tasks not yet started are cancelled. The pack driver (:mod:`aezip.store.shards`) records each result
as it arrives, so an interrupted job resumes from the shards that finished.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from aezip.errors import AezipError

ENGINES = ("local", "ray")


class Executor(Protocol):
    """Runs independent tasks; results come back as tasks finish."""

    def run(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[tuple[int, Any]]: ...


def _start_method() -> str:
    """``fork`` on Linux while CUDA is not initialised (workers start in milliseconds and run one intra-op
    thread each, as DataLoader workers do), else ``spawn``."""
    import torch

    return "fork" if sys.platform == "linux" and not torch.cuda.is_initialized() else "spawn"


class LocalExecutor:
    """``jobs`` worker processes, or this process when ``jobs`` is 1."""

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = max(1, jobs)

    def run(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        if self.jobs == 1 or len(tasks) <= 1:
            for i, task in enumerate(tasks):
                yield i, fn(task)
            return
        context = multiprocessing.get_context(_start_method())
        pool = ProcessPoolExecutor(max_workers=min(self.jobs, len(tasks)), mp_context=context)
        try:
            pending: dict[Future[Any], int] = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=pending.__getitem__):
                    yield pending.pop(future), future.result()
        except BrokenProcessPool:
            raise AezipError(
                "a worker process died (killed, or out of memory); run the same command again to resume"
            ) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """One Ray Core task per item, on the cluster at ``address`` (or ``RAY_ADDRESS``), else a local one.

    A Ray session that is already initialised (``ray.init`` by the caller) is used as it is and
    left running; one started here is shut down afterwards. Ray retries a task whose worker dies
    (``max_retries``); a task that raises is not retried. Paths must be visible to every node
    (a shared file system).
    """

    def __init__(self, address: str | None = None, cpus: int | None = None, max_retries: int = 3) -> None:
        try:
            import ray
        except ImportError:
            raise AezipError("--engine ray needs Ray: pip install 'aezip[ray]'") from None
        self.ray = ray
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.cpus = cpus
        self.max_retries = max_retries

    def run(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        ray = self.ray
        started = not ray.is_initialized()
        if started:
            local = {"num_cpus": self.cpus} if self.address is None and self.cpus else {}
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, **local)
        remote = ray.remote(num_cpus=1, max_retries=self.max_retries)(fn)
        refs: dict[Any, int] = {}
        try:
            refs = {remote.remote(task): i for i, task in enumerate(tasks)}
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    i = refs.pop(ref)
                    yield i, _unwrap(ray, ref)
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()


def _unwrap(ray: Any, ref: Any) -> Any:
    """``ray.get``, with an aezip error raised inside a task re-raised as itself (a one-line message)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.as_instanceof_cause() if hasattr(exc, "as_instanceof_cause") else exc
        if isinstance(cause, (AezipError, OSError)):
            raise AezipError(str(getattr(exc, "cause", None) or cause).splitlines()[0]) from None
        raise


def make_executor(engine: str, jobs: int = 1, address: str | None = None) -> Executor:
    """The executor for ``--engine`` (``local`` with ``jobs`` processes, or ``ray``)."""
    if engine == "local":
        return LocalExecutor(jobs)
    if engine == "ray":
        return RayExecutor(address, cpus=jobs)
    raise AezipError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
