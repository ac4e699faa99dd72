"""Process pools: spawned (never forked from a process holding torch threads), and tied to
their parent, so that killing a run never leaves its workers computing on their own."""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
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


def die_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """Make this process end when the process ``parent_pid`` does: the kernel sends SIGKILL
    on Linux (:func:`arm_death_signal`); elsewhere a daemon thread polls the parent."""
    armed = arm_death_signal()
    if os.getppid() != parent_pid:      # the parent died before the signal was armed
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent_pid, poll_s), daemon=True).start()


def _watch_parent(parent_pid: int, poll_s: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(poll_s)
    os._exit(1)


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes that die with the process creating it."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))


def can_start_workers() -> bool:
    """False inside a daemonic process (a dask worker, say), which may not start children."""
    return not multiprocessing.current_process().daemon


def map_in_order(fn: Callable, jobs: Sequence, workers: int, desc: str,
                 progress: bool) -> Iterator:
    """Yield ``fn(job)`` for every job, in order, on ``workers`` spawned processes (one process
    with a single worker or job, or inside a daemonic process such as a dask worker), with a
    progress bar that reaches n of n when the caller runs the iterator to its end."""
    from tqdm import tqdm
    bar = dict(total=len(jobs), desc=desc, disable=not progress)
    if workers <= 1 or len(jobs) <= 1 or not can_start_workers():
        yield from (fn(j) for j in tqdm(jobs, **bar))
        return
    with process_pool(workers) as pool:
        yield from tqdm(pool.map(fn, jobs), **bar)
