"""Artifacts keyed by the configuration's stage hashes, written atomically, with provenance.

Layout: ``ROOT/<stage>-<key>/`` holds the stage's files and, written last, ``_complete.json``:
the provenance record (configuration, seed, package versions, git commit, wall time, machine)
plus each file's size and SHA-256. A stage folder counts as complete only when that record
exists and every file it lists is present with the recorded size and digest; anything else is
partial (for example a run killed midway) and is recomputed with a warning. Every file is
written to a temporary name in the same folder and renamed into place, so a reader never sees
half a file.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config

COMPLETE = "_complete.json"


class CorruptArtifact(RuntimeError):
    """An artifact that exists but cannot be read back."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_parquet(path: Path, frame) -> None:
    """A DataFrame as parquet, written atomically (no index)."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    atomic_write_bytes(Path(path), buf.getvalue())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(config: Config, stage: str, wall_time: float) -> dict[str, Any]:
    """What produced an artifact: config, seed, versions, commit, wall time, machine."""
    import numpy
    import pandas
    from . import __version__
    return {
        "stage": stage, "key": config.stage_key(stage), "config": config.to_dict(),
        "seed": config.seed, "wall_time_s": round(wall_time, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_commit": git_commit(),
        "versions": {"punl": __version__, "python": sys.version.split()[0],
                     "torch": torch.__version__, "numpy": numpy.__version__,
                     "pandas": pandas.__version__},
        "machine": {"node": platform.node(), "platform": platform.platform(),
                    "processor": platform.machine(), "cpus": os.cpu_count()},
    }


class StageDir:
    """One stage's artifact folder: typed atomic writers and readers."""

    def __init__(self, path: Path):
        self.path = path

    def file(self, name: str) -> Path:
        return self.path / name

    # -- writers
    def save_bytes(self, name: str, data: bytes) -> None:
        atomic_write_bytes(self.file(name), data)

    def save_torch(self, name: str, obj: Any) -> None:
        buf = io.BytesIO()
        torch.save(obj, buf)
        atomic_write_bytes(self.file(name), buf.getvalue())

    def save_json(self, name: str, obj: Any) -> None:
        atomic_write_bytes(self.file(name), json.dumps(obj, indent=2, default=str).encode())

    def save_parquet(self, name: str, frame) -> None:
        atomic_write_parquet(self.file(name), frame)

    # -- readers
    def load_npz(self, name: str) -> dict[str, np.ndarray]:
        try:
            with np.load(self.file(name)) as z:
                return {k: z[k] for k in z.files}
        except Exception as err:  # noqa: BLE001 - any read failure means a corrupt artifact
            raise CorruptArtifact(f"artifact {self.file(name)} cannot be read: {err}") from err

    def load_torch(self, name: str) -> Any:
        try:
            return torch.load(self.file(name), weights_only=True)
        except Exception as err:  # noqa: BLE001
            raise CorruptArtifact(f"artifact {self.file(name)} cannot be read: {err}") from err

    def load_json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text())

    def load_parquet(self, name: str):
        import pandas as pd
        return pd.read_parquet(self.file(name))

    # -- completeness
    def is_complete(self) -> bool:
        record = self.file(COMPLETE)
        if not record.exists():
            return False
        try:
            files = json.loads(record.read_text())["files"]
        except (ValueError, KeyError):
            return False
        for name, meta in files.items():
            p = self.file(name)
            if not p.exists() or p.stat().st_size != meta["size"] or _sha256(p) != meta["sha256"]:
                return False
        return True

    def mark_complete(self, record: dict[str, Any]) -> None:
        names = sorted(p.name for p in self.path.iterdir()
                       if p.is_file() and p.name != COMPLETE and not p.name.startswith("."))
        record = dict(record, files={n: {"size": self.file(n).stat().st_size,
                                         "sha256": _sha256(self.file(n))} for n in names})
        self.save_json(COMPLETE, record)

    def provenance(self) -> dict[str, Any]:
        return self.load_json(COMPLETE)


class ArtifactStore:
    """Stage folders under ``root`` named ``<stage>-<config.stage_key(stage)>``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def stage(self, config: Config, stage: str) -> StageDir:
        return StageDir(self.root / f"{stage}-{config.stage_key(stage)}")

    @contextmanager
    def producing(self, config: Config, stage: str):
        """Yield the stage folder to write into; on success write the provenance record last.

        A folder left partial by an earlier run is reported and overwritten file by file."""
        sd = self.stage(config, stage)
        if sd.path.exists() and not sd.is_complete():
            warnings.warn(f"{stage}: artifact folder {sd.path} is partial or corrupt; recomputing",
                          stacklevel=3)
            sd.file(COMPLETE).unlink(missing_ok=True)
        sd.path.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        yield sd
        sd.mark_complete(provenance(config, stage, time.perf_counter() - start))
