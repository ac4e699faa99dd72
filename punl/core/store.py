"""Artifacts keyed by the configuration's stage hashes, written atomically, with provenance.

Layout: ``ROOT/<stage>-<key>/`` holds the stage's files and, written last, ``_complete.json``:
the provenance record (configuration, seed, package versions, git commit, wall time, machine)
plus each file's size and SHA-256. A stage folder counts as complete only when that record
is well formed, names the stage's key and its required files, and every file it lists is
present with the recorded size and digest; anything else is partial (a run killed midway) or
corrupt, and is recomputed with a :class:`RecomputeWarning`.

Every file a :class:`StageDir` writes also gets its digest, in a hidden ``.<name>.sha256`` beside
it, and every file it reads is checked before use: against that digest, or for a stage's own
files against the record. So the resume caches inside a stage folder (finished training runs,
finished forget groups) are never reused unverified; a mismatch, a missing digest or an
unreadable file raises :class:`CorruptArtifact`. Every file is written to a temporary name in
the same folder and renamed into place, so a reader never sees half a file.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
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
    """An artifact that exists but cannot be read back, or does not match its digest."""


class RecomputeWarning(UserWarning):
    """A stage or a cached entry was found partial or corrupt and is being recomputed."""


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


def file_meta(path: Path) -> dict[str, Any]:
    """``{"size": bytes, "sha256": hex}`` of a file."""
    return {"size": path.stat().st_size, "sha256": _sha256(path)}


def matches(path: Path, meta: Any) -> bool:
    """Whether ``path`` exists with the size and SHA-256 recorded in ``meta`` (False for a
    malformed ``meta``)."""
    if not (isinstance(meta, dict) and isinstance(meta.get("size"), int)
            and isinstance(meta.get("sha256"), str)):
        return False
    try:
        return path.stat().st_size == meta["size"] and _sha256(path) == meta["sha256"]
    except OSError:
        return False


def is_plain_name(name: Any) -> bool:
    """A relative path inside a folder: no absolute path, no ``..``, no empty part."""
    if not isinstance(name, str) or not name or name.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str | None:
    """The CPU's model name as Linux reports it (``/proc/cpuinfo``), or None where it names
    none (another system, or a CPU whose entry has no ``model name`` line)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return found.group(1).strip() if found else None


def provenance(config: Config, stage: str, wall_time: float) -> dict[str, Any]:
    """What produced an artifact: config, seed, versions, commit, wall time, machine.

    The machine includes the vector instruction set torch's CPU kernels dispatched to
    (``torch_cpu_capability``: ``AVX512``, ``AVX2``, ...): the same stage key computed through
    other kernels agrees only to rounding, which hundreds of noisy steps can carry into a
    borderline point's verdict."""
    import numpy
    import pandas
    from .. import __version__
    return {
        "stage": stage, "key": config.stage_key(stage), "config": config.to_dict(),
        "seed": config.seed, "wall_time_s": round(wall_time, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_commit": git_commit(),
        "versions": {"punl": __version__, "python": sys.version.split()[0],
                     "torch": torch.__version__, "numpy": numpy.__version__,
                     "pandas": pandas.__version__},
        "machine": {"node": platform.node(), "platform": platform.platform(),
                    "processor": platform.machine(), "cpus": os.cpu_count(),
                    "cpu": cpu_model(),
                    "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()},
    }


class StageDir:
    """One stage's artifact folder: typed atomic writers and verifying readers."""

    def __init__(self, path: Path):
        self.path = path

    def file(self, name: str) -> Path:
        return self.path / name

    def digest_file(self, name: str) -> Path:
        """Where the digest of file ``name`` is kept: ``.<name>.sha256`` beside it."""
        path = self.file(name)
        return path.with_name(f".{path.name}.sha256")

    # -- writers
    def save_bytes(self, name: str, data: bytes) -> None:
        """Write ``name`` atomically, then its digest."""
        atomic_write_bytes(self.file(name), data)
        meta = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_bytes(self.digest_file(name), json.dumps(meta).encode())

    def save_torch(self, name: str, obj: Any) -> None:
        buf = io.BytesIO()
        torch.save(obj, buf)
        self.save_bytes(name, buf.getvalue())

    def save_json(self, name: str, obj: Any) -> None:
        atomic_write_bytes(self.file(name), json.dumps(obj, indent=2, default=str).encode())

    def save_parquet(self, name: str, frame) -> None:
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        self.save_bytes(name, buf.getvalue())

    # -- readers
    def read_verified(self, name: str) -> bytes:
        """The bytes of ``name`` once they match its digest (its own, or the record's for a
        stage file); :class:`CorruptArtifact` otherwise."""
        try:
            data = self.file(name).read_bytes()
        except OSError as err:
            raise CorruptArtifact(f"{self.file(name)} unreadable ({err.strerror})") from None
        meta = self._recorded_meta(name)
        if meta is None:
            raise CorruptArtifact(f"{self.file(name)} has no digest record")
        if len(data) != meta.get("size") or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise CorruptArtifact(f"{self.file(name)} does not match its recorded SHA-256")
        return data

    def _recorded_meta(self, name: str) -> dict | None:
        try:
            meta = json.loads(self.digest_file(name).read_text())
        except (OSError, ValueError):
            meta = (self.record_files() or {}).get(name)
        return meta if isinstance(meta, dict) else None

    def _parse(self, name: str, parse):
        data = self.read_verified(name)
        try:
            return parse(io.BytesIO(data))
        except Exception as err:  # noqa: BLE001 - any read failure means a corrupt artifact
            raise CorruptArtifact(f"artifact {self.file(name)} cannot be read: {err}") from err

    def load_npz(self, name: str) -> dict[str, np.ndarray]:
        def parse(buf):
            with np.load(buf) as z:
                return {k: z[k] for k in z.files}
        return self._parse(name, parse)

    def load_torch(self, name: str) -> Any:
        return self._parse(name, lambda buf: torch.load(buf, weights_only=True))

    def load_json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text())

    def load_parquet(self, name: str):
        import pandas as pd
        return self._parse(name, pd.read_parquet)

    # -- completeness
    def record_files(self, key: str | None = None, required: tuple[str, ...] = ()) -> dict | None:
        """The ``files`` of a well-formed provenance record naming ``key`` and listing every
        ``required`` file; None when the record is missing, unreadable or malformed."""
        try:
            record = json.loads(self.file(COMPLETE).read_text())
        except (OSError, ValueError):
            return None
        files = record.get("files") if isinstance(record, dict) else None
        if not isinstance(files, dict) or not files or not all(map(is_plain_name, files)):
            return None
        if key is not None and record.get("key") != key:
            return None
        return files if set(required) <= set(files) else None

    def is_complete(self, key: str | None = None, required: tuple[str, ...] = ()) -> bool:
        """True when the record is well formed (see :meth:`record_files`) and every file it
        lists is present with its recorded size and SHA-256."""
        files = self.record_files(key, required)
        return files is not None and all(matches(self.file(n), m) for n, m in files.items())

    def invalidate(self) -> None:
        """Remove the provenance record, so the folder counts as partial."""
        self.file(COMPLETE).unlink(missing_ok=True)

    def mark_complete(self, record: dict[str, Any]) -> None:
        names = sorted(p.name for p in self.path.iterdir()
                       if p.is_file() and p.name != COMPLETE and not p.name.startswith("."))
        record = dict(record, files={n: file_meta(self.file(n)) for n in names})
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

        A folder left partial by an earlier run is reported and overwritten file by file (its
        verified resume-cache entries are kept)."""
        sd = self.stage(config, stage)
        if sd.path.exists():
            warnings.warn(f"{stage}: artifact folder {sd.path} is partial or corrupt; recomputing",
                          RecomputeWarning, stacklevel=3)
        sd.invalidate()
        sd.path.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        yield sd
        sd.mark_complete(provenance(config, stage, time.perf_counter() - start))
