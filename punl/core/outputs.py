"""The output contract: one run at a time per output folder, and outputs swapped in whole.

A run writes its published files (tables, ``run.json``, executed notebooks, a chapter) into a
staging folder and, only when it has completed, swaps that folder in place of the published
one in a single step (``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere the old folder is
renamed aside and the new one in, and :func:`recover` undoes a swap cut between the two
renames). A reader therefore sees the previous complete run or the new complete run, never a
mix, and a failing or killed run leaves the published folders as they were.

Layout of an output folder::

    <out>/.punl         marks the folder as punl's: punl writes only in folders it created
    <out>/.lock         advisory lock held by the run using the folder (fcntl.flock)
    <out>/artifacts/    stage folders with their resume caches (punl.core.store)
    <out>/published/    the last complete run: its tables and run.json
    <out>/.staging/     the run in progress (or the last failed one, for inspection)

A chapter ``<book>/runs/<run>/`` is staged in ``<book>/runs/.staging-<run>/`` the same way.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .store import atomic_write_bytes, matches

LOCK = ".lock"
MARKER = ".punl"
PUBLISHED = "published"
STAGING = ".staging"
RUN_RECORD = "run.json"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


# ------------------------------------------------------------------------------------- lock
_held: set[Path] = set()


def _lock_holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "another process"
    except OSError:
        return "another process"


def lock_in_use(folder: str | Path) -> bool:
    """Whether a run holds ``<folder>/.lock`` now (this process included)."""
    path = Path(folder).resolve() / LOCK
    if path in _held:
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextmanager
def output_lock(folder: str | Path) -> Iterator[Path]:
    """Hold the exclusive advisory lock ``<folder>/.lock`` (the folder is created).

    While another process holds it, say so once on stderr and wait. Re-entrant within a
    process; released when the process exits, however it exits."""
    path = Path(folder).resolve() / LOCK
    if path in _held:
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if not (path.parent / MARKER).exists():
        atomic_write_bytes(path.parent / MARKER, b"an output folder of punl\n")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"punl: {path.parent} is in use by {_lock_holder(path)}; waiting for it to "
                  "finish", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {platform.node()} since "
                     f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
        _held.add(path)
        yield path
    finally:
        _held.discard(path)
        os.close(fd)


def foreign_entries(folder: str | Path) -> list[str]:
    """What in ``folder`` punl did not write, so that a run there would not touch it: nothing
    for a new, empty or marked (``.punl``) folder. An unmarked folder is punl's only when it
    holds the layout of the module docstring and nothing else: ``published/`` only ``run.json``
    and the tables it lists, ``.staging/`` only tables and ``run.json``, ``artifacts/`` only
    stage folders (a run made before folders were marked)."""
    folder = Path(folder)
    if not folder.is_dir() or (folder / MARKER).exists():
        return []
    return sorted(e.name + ("/" if e.is_dir() else "") for e in folder.iterdir()
                  if not _punls(e))


def misplaced_files(folder: str | Path) -> list[str]:
    """Files of an output folder standing where punl keeps a folder (``published``,
    ``.staging``, ``artifacts`` and its stage folders): a run would fail on them midway."""
    folder = Path(folder)
    places = [folder / PUBLISHED, folder / STAGING, folder / "artifacts"]
    if (folder / "artifacts").is_dir():
        places += [e for e in (folder / "artifacts").iterdir() if "-" in e.name]
    return sorted(p.relative_to(folder).as_posix() for p in places
                  if p.exists() and not p.is_dir())


def _punls(entry: Path) -> bool:
    """Whether an entry of an unmarked output folder is one punl writes (:func:`foreign_entries`)."""
    name = entry.name
    if name in (LOCK, aside(Path(PUBLISHED)).name):
        return True
    if not entry.is_dir() or entry.is_symlink():
        return False
    files = list(entry.iterdir())
    if name == PUBLISHED:
        record = published_record(entry.parent) or {}
        listed = {RUN_RECORD, *(record.get("tables") or {})}
        return all(f.name in listed and f.is_file() for f in files)
    if name == STAGING:
        return all(f.is_file() and (f.suffix == ".parquet" or f.name == RUN_RECORD) for f in files)
    if name == "artifacts":
        return all(f.is_dir() and "-" in f.name for f in files)
    return False


# ------------------------------------------------------------------------------------- swap
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` to disk (before it is swapped in)."""
    for root, _, names in os.walk(folder):
        for name in names:
            with open(Path(root) / name, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(root))


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2`` with ``RENAME_EXCHANGE``);
    False when the system or the file system cannot."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def aside(target: Path) -> Path:
    """Where :func:`swap_in` parks the old folder when it cannot exchange the two."""
    return target.parent / f".{target.name}.old"


def swap_in(staged: Path, target: Path) -> Path:
    """Put the folder ``staged`` in place of ``target`` in one step and delete the old one."""
    fsync_tree(staged)
    if not target.exists():
        os.rename(staged, target)
    elif exchange(staged, target):
        shutil.rmtree(staged)
    else:
        old = aside(target)
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
        os.rename(staged, target)
        shutil.rmtree(old)
    _fsync_dir(target.parent)
    return target


def recover(target: Path) -> None:
    """Undo a :func:`swap_in` cut between its two renames: the old folder goes back."""
    old = aside(target)
    if old.exists() and not target.exists():
        os.rename(old, target)
    elif old.exists():
        shutil.rmtree(old)


class StagedFolder:
    """A folder published whole: written in ``staging``, then swapped in as ``target``."""

    def __init__(self, target: Path, staging: Path):
        self.target, self.staging = Path(target), Path(staging)

    def begin(self) -> Path:
        """Recover an interrupted swap and start an empty staging folder."""
        recover(self.target)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        return self.staging

    def commit(self) -> Path:
        """Swap the staging folder in as the target; returns the target."""
        return swap_in(self.staging, self.target)


def chapter_staging(chapter_dir: Path) -> StagedFolder:
    """A chapter folder staged beside it, hidden from the book (``.staging-<run>``)."""
    return StagedFolder(chapter_dir, chapter_dir.parent / f".staging-{chapter_dir.name}")


# ------------------------------------------------------------------------------ publication
class Publication(StagedFolder):
    """A run's published folder ``<out>/published``: its tables and ``run.json``."""

    def __init__(self, out_dir: Path):
        super().__init__(Path(out_dir) / PUBLISHED, Path(out_dir) / STAGING)

    def write_tables(self, frames: dict[str, Any]) -> dict[str, dict]:
        """Each DataFrame as ``<name>.parquet`` in the staging folder; returns their digests."""
        metas = {}
        for name, frame in frames.items():
            buf = io.BytesIO()
            frame.to_parquet(buf, index=False)
            data = buf.getvalue()
            atomic_write_bytes(self.staging / f"{name}.parquet", data)
            metas[f"{name}.parquet"] = {"size": len(data),
                                        "sha256": hashlib.sha256(data).hexdigest()}
        return metas

    def write_record(self, record: dict) -> Path:
        """``run.json`` in the staging folder (written after the tables it lists)."""
        return write_json(self.staging / RUN_RECORD, record)


def write_json(path: Path, obj: Any) -> Path:
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=str).encode())
    return path


def published_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / PUBLISHED


def published_record(out_dir: str | Path) -> dict | None:
    """The ``run.json`` of an output folder's published run (None when there is none)."""
    try:
        return json.loads((published_dir(out_dir) / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return None


def read_published(out_dir: str | Path, table: str):
    """A published table, checked against the digest ``run.json`` records for it; None when
    the run did not publish it or it does not match."""
    import pandas as pd
    record = published_record(out_dir) or {}
    name = f"{table}.parquet"
    path = published_dir(out_dir) / name
    if not matches(path, (record.get("tables") or {}).get(name)):
        return None
    return pd.read_parquet(path)
