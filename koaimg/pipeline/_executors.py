"""Where jobs run: inline, a local process pool (threads split between workers, one GPU worker), or Dask.

All three hand back ``concurrent.futures.Future`` objects so the coordinator waits on them the same way.
Thread split: with N workers on C cores each worker gets max(1, C // N) threads for numba, BLAS and torch, set in the
environment the workers start with, so two workers do not fight over the same cores.
Dask: ``--scheduler tcp://HOST:PORT`` (or ``KOAIMG_SCHEDULER``) submits the same jobs to a distributed cluster whose
workers see the same file system (scan root and OUT) and have koaimg installed.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from ._stages import Job, execute

THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "KOAIMG_NUM_THREADS")


def cpu_count() -> int:
    """Cores this process may use (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Cores divided between workers, at least one each."""
    return max(1, (cores or cpu_count()) // max(1, workers))


@contextlib.contextmanager
def thread_env(threads: int) -> Iterator[None]:
    """Set the thread-count variables that spawned workers inherit; restore them afterwards."""
    saved = {k: os.environ.get(k) for k in THREAD_VARS}
    try:
        for k in THREAD_VARS:
            os.environ[k] = str(threads)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _init_worker(threads: int) -> None:
    """Worker start-up: pin torch's intra-op threads too (numba and BLAS read the environment)."""
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def cuda_available() -> bool:
    """bool: torch is installed and sees a CUDA device (checked only when a model would run)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken CUDA install means no GPU worker, not a failed run
        return False


class InlineExecutor:
    """Runs each job at submit time in this process (``--workers 0``: debugging, tests, tiny runs)."""

    name = "inline"
    workers = 0

    def submit(self, job: Job) -> Future:
        """Run ``job`` now and return a completed future."""
        future: Future = Future()
        try:
            future.set_result(execute(job))
        except BaseException as exc:  # handed to the coordinator, as a pool would
            future.set_exception(exc)
        return future

    def shutdown(self) -> None:
        """Nothing to stop."""


class LocalExecutor:
    """A process pool of ``workers`` CPU workers and, when ``gpu`` is true, one extra worker for GPU stages."""

    name = "local"

    def __init__(self, workers: int, *, gpu: bool = False, cores: int | None = None) -> None:
        self.workers = workers
        self.threads = threads_per_worker(workers, cores)
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters: numba/torch thread pools are not forked
        self._env = thread_env(self.threads)
        self._env.__enter__()
        self._cpu = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                        initargs=(self.threads,))
        self._gpu = ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_init_worker,
                                        initargs=(self.threads,)) if gpu else None

    def submit(self, job: Job) -> Future:
        """Queue ``job`` on the GPU worker (segmentation jobs) or the CPU pool."""
        pool = self._gpu if (job.pool == "gpu" and self._gpu is not None) else self._cpu
        return pool.submit(execute, job)

    def shutdown(self) -> None:
        """Stop the workers (cancelling queued jobs) and restore the thread variables."""
        self._cpu.shutdown(wait=True, cancel_futures=True)
        if self._gpu is not None:
            self._gpu.shutdown(wait=True, cancel_futures=True)
        self._env.__exit__(None, None, None)


class DaskExecutor:
    """Submit jobs to a Dask distributed scheduler (address ``tcp://HOST:PORT`` or an in-process address)."""

    name = "dask"

    def __init__(self, address: str) -> None:
        try:
            from distributed import Client
        except ImportError:
            from ..core import KoaimgError

            raise KoaimgError("--scheduler needs dask.distributed", path=None,
                              hint="pip install 'koaimg[cluster]'") from None
        self.client = Client(address, set_as_default=False)
        self.workers = len(self.client.scheduler_info().get("workers", {}))
        self._executor = self.client.get_executor(pure=False)

    def submit(self, job: Job) -> Future:
        """Queue ``job`` on the cluster (every job runs anywhere; segmentation uses the worker's own device)."""
        return self._executor.submit(execute, job)

    def shutdown(self) -> None:
        """Wait for nothing more and disconnect (the cluster keeps running)."""
        self._executor.shutdown(wait=True)
        self.client.close()


def make_executor(workers: int, *, scheduler: str | None = None, gpu: bool = False):
    """The executor a run asks for: Dask when a scheduler is given (or in ``KOAIMG_SCHEDULER``), else local."""
    address = scheduler or os.environ.get("KOAIMG_SCHEDULER") or None
    if address:
        return DaskExecutor(address)
    if workers <= 0:
        return InlineExecutor()
    return LocalExecutor(workers, gpu=gpu)
