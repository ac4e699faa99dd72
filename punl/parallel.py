"""Process pools: spawned (never forked from a process holding torch threads)."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def can_start_workers() -> bool:
    """False inside a daemonic process (a dask worker, say), which may not start children."""
    return not multiprocessing.current_process().daemon
