"""Process pools: started from a fork server (never forked from a process holding torch
threads), and tied to the process that created them, so that killing a run never leaves its
workers computing on their own.

On Linux the fork server is a fresh interpreter that imports torch and the modules whose jobs
the pools run once (:func:`preload_in_workers`, when a process makes its first pool); each
worker is a fork of it and starts in milliseconds instead of the seconds a spawned interpreter
spends importing them. The server stays until the process that started it ends (a few hundred
MB, mostly shared with its workers), and its workers run the code and environment variables
as they were when it started. Elsewhere (macOS, whose system libraries are not safe to use
after a fork, and Windows) workers are spawned."""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterator, Sequence

_PR_SET_PDEATHSIG = 1


def arm_death_signal() -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux's
    ``prctl(PR_SET_PDEATHSIG)``); False where it cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def run_tied(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, **kwargs)`` of a command that dies with this process (Linux; it
    is armed between fork and exec), so that killing punl never leaves it running."""
    tie = arm_death_signal if sys.platform.startswith("linux") else None
    return subprocess.run(cmd, preexec_fn=tie, **kwargs)


def die_with_parent() -> None:
    """Make this pool worker end when the process that created its pool does. A daemon thread
    waits on the pipe from that process, which closes when it dies (the worker's OS parent is
    the fork server, which outlives it); a spawned worker's OS parent is its creator, and on
    Linux the kernel also sends it SIGKILL then (:func:`arm_death_signal`)."""
    creator = multiprocessing.parent_process()
    if creator is None:
        return
    if sys.platform.startswith("linux") and os.getppid() == creator.pid:   # spawned
        arm_death_signal()
    if not creator.is_alive():          # it died before the watch began
        os._exit(1)
    threading.Thread(target=_exit_when_gone, args=(creator,), daemon=True).start()


def _exit_when_gone(creator) -> None:
    creator.join()
    os._exit(1)


_preload = ["torch"]


def preload_in_workers(*modules: str) -> None:
    """Have the fork server import ``modules`` (with torch) before it forks any worker, so that
    no worker imports them itself; only modules named before a process's first pool count."""
    _preload.extend(m for m in modules if m not in _preload)


def worker_context(modules: Sequence[str] = ()) -> multiprocessing.context.BaseContext:
    """On Linux the fork server's context (:func:`preload_in_workers` and ``modules``
    preloaded), elsewhere spawn."""
    if not (sys.platform.startswith("linux")
            and "forkserver" in multiprocessing.get_all_start_methods()):
        return multiprocessing.get_context("spawn")
    preload_in_workers(*modules)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(_preload))
    return context


_worker_peak_bytes = 0.0


def resident_peak_bytes(pid: int) -> float:
    """The peak resident set of process ``pid`` so far (Linux's VmHWM), in bytes; 0 where it
    cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 0.0


def worker_peak_bytes() -> float:
    """The largest peak resident set of any worker of the pools this process has shut down,
    in bytes (read before they exit: forked by the fork server, they are not this process's
    children, so its ``RUSAGE_CHILDREN`` never counts them)."""
    return _worker_peak_bytes


class TiedPool(ProcessPoolExecutor):
    """A pool of ``workers`` processes (:func:`worker_context`, with ``modules`` preloaded where
    there is a fork server) that die with the process creating it (:func:`die_with_parent`),
    and whose shutdown records their peak memory (:func:`worker_peak_bytes`)."""

    def __init__(self, workers: int, modules: Sequence[str] = ()):
        super().__init__(max_workers=workers, mp_context=worker_context(modules),
                         initializer=die_with_parent)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        global _worker_peak_bytes
        peaks = [resident_peak_bytes(pid) for pid in list(self._processes or ())]
        _worker_peak_bytes = max([_worker_peak_bytes, *peaks])
        super().shutdown(wait=wait, cancel_futures=cancel_futures)


def process_pool(workers: int, modules: Sequence[str] = ()) -> TiedPool:
    """A :class:`TiedPool` of ``workers`` processes; ``modules``: where its jobs' functions live."""
    return TiedPool(workers, modules)


def can_start_workers() -> bool:
    """False inside a daemonic process (a dask worker, say), which may not start children."""
    return not multiprocessing.current_process().daemon


def map_in_order(fn: Callable, jobs: Sequence, workers: int, desc: str,
                 progress: bool) -> Iterator:
    """Yield ``fn(job)`` for every job, in order, on ``workers`` pool processes (one process
    with a single worker or job, or inside a daemonic process such as a dask worker), with a
    progress bar that reaches n of n when the caller runs the iterator to its end."""
    from tqdm import tqdm
    bar = dict(total=len(jobs), desc=desc, disable=not progress)
    if workers <= 1 or len(jobs) <= 1 or not can_start_workers():
        yield from (fn(j) for j in tqdm(jobs, **bar))
        return
    with process_pool(workers, (fn.__module__,)) as pool:
        yield from tqdm(pool.map(fn, jobs), **bar)
