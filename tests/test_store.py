"""The artifact store: atomic writes, provenance, reuse, partial and corrupt folders."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from punl.stages.pipeline import ensure_trained
from punl.core.store import COMPLETE, ArtifactStore


def test_training_artifacts_are_reused(tiny_config, tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    first = ensure_trained(tiny_config, store, progress=False)
    record = first.dir.provenance()
    assert record["config"]["lr"] == tiny_config.lr and record["seed"] == tiny_config.seed
    assert {"torch", "numpy", "punl"} <= set(record["versions"]) and record["wall_time_s"] > 0
    assert set(record["files"]) == {"ledger.npz", "models.pt"}
    mtime = first.dir.file("ledger.npz").stat().st_mtime_ns
    import punl.engine.train as T
    monkeypatch.setattr(T, "train", lambda *a, **k: pytest.fail("retrained a stored run"))
    second = ensure_trained(tiny_config, store, progress=False)
    assert second.dir.file("ledger.npz").stat().st_mtime_ns == mtime
    assert np.array_equal(first.ledger.grad_norm, second.ledger.grad_norm)


def test_provenance_names_the_kernels_torch_dispatched_to(tiny_config):
    """The recorded instruction set is the one torch's kernels use: forced to the portable
    kernels (``ATEN_CPU_CAPABILITY=default``, which every CPU runs), the record says so."""
    from punl.core.store import cpu_model, provenance
    machine = provenance(tiny_config, "train", 1.0)["machine"]
    assert isinstance(machine["torch_cpu_capability"], str) and machine["torch_cpu_capability"]
    assert machine["cpu"] == cpu_model()
    script = ("from punl.core.config import Config; from punl.core.store import provenance;"
              "print(provenance(Config(), 'train', 1.0)['machine']['torch_cpu_capability'])")
    forced = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "ATEN_CPU_CAPABILITY": "default"}, timeout=120)
    assert forced.stdout.strip() == "DEFAULT", forced.stderr[-2000:]


def test_corrupt_artifact_is_recomputed_with_a_warning(tiny_config, tmp_path):
    store = ArtifactStore(tmp_path)
    first = ensure_trained(tiny_config, store, progress=False)
    path = first.dir.file("ledger.npz")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match="partial or corrupt"):
        again = ensure_trained(tiny_config, store, progress=False)
    assert np.array_equal(again.ledger.grad_norm, first.ledger.grad_norm)


KILL_SCRIPT = """
import os, sys, signal
from punl.core.config import Config
from punl.core.store import ArtifactStore, StageDir
from punl.stages.pipeline import ensure_trained
import punl.engine.train as t
orig = StageDir.save_torch
def die(self, name, obj):  # the ledger is written, the models are not: kill mid-stage
    if name == "models.pt":
        os.kill(os.getpid(), signal.SIGKILL)
    return orig(self, name, obj)
StageDir.save_torch = die
cfg = Config(**{cfg!r})
ensure_trained(cfg, ArtifactStore(sys.argv[1]), progress=False)
"""


def test_killed_run_leaves_nothing_mistaken_for_complete(tiny_config, tmp_path):
    script = KILL_SCRIPT.replace("{cfg!r}", repr(tiny_config.to_dict()))
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True)
    assert proc.returncode == -9
    store = ArtifactStore(tmp_path)
    sd = store.stage(tiny_config, "train")
    assert sd.file("ledger.npz").exists() and not sd.file(COMPLETE).exists()
    assert not sd.is_complete()
    with pytest.warns(UserWarning, match="partial"):
        run = ensure_trained(tiny_config, store, progress=False)
    assert sd.is_complete() and len(run.final) == tiny_config.runs


def test_atomic_write_leaves_no_temp_files(tmp_path):
    from punl.core.store import atomic_write_bytes
    atomic_write_bytes(tmp_path / "a.bin", b"x" * 1000)
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_checkpoints_load_with_weights_only(tiny_config, tmp_path):
    run = ensure_trained(tiny_config, ArtifactStore(tmp_path), progress=False)
    import torch
    models = torch.load(run.dir.file("models.pt"), weights_only=True)
    assert len(models["final"]) == tiny_config.runs
    assert all(torch.equal(a[k], b[k]) for a, b in zip(models["final"], run.final) for k in a)
    record = json.loads(run.dir.file(COMPLETE).read_text())
    assert record["stage"] == "train" and record["key"] == tiny_config.stage_key("train")


def test_interrupted_training_resumes_from_its_snapshot(tiny_config, tmp_path, monkeypatch):
    import punl.engine.sgd as S
    import punl.engine.train as T
    cfg = tiny_config.replace(runs=3)
    store = ArtifactStore(tmp_path)
    monkeypatch.setattr(T, "SNAPSHOT_SECONDS", -1.0)      # a snapshot after every segment
    real, steps_run = S.Population.advance, []

    def dies_on_the_third_segment(self, steps, on_step=None):
        steps_run.append(steps)
        if len(steps_run) == 3:
            raise KeyboardInterrupt
        return real(self, steps, on_step)

    monkeypatch.setattr(S.Population, "advance", dies_on_the_third_segment)
    with pytest.raises(KeyboardInterrupt):
        ensure_trained(cfg, store, progress=False)
    assert store.stage(cfg, "train").file("snapshot.pt").exists()
    steps_run.clear()
    monkeypatch.setattr(S.Population, "advance",
                        lambda self, n, f=None: steps_run.append(n) or real(self, n, f))
    with pytest.warns(UserWarning, match="partial"):
        resumed = ensure_trained(cfg, store, progress=False)
    assert sum(steps_run) == resumed.ledger.total_steps - 2 * 16   # two segments were kept
    assert not resumed.dir.file("snapshot.pt").exists()
    fresh = ensure_trained(cfg, ArtifactStore(tmp_path / "fresh"), progress=False)
    assert resumed.ledger.to_bytes() == fresh.ledger.to_bytes()
    for a, b in zip(resumed.final, fresh.final):
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_mapped_bar_reaches_n_of_n(workers, capsys):
    """The bar of :func:`punl.core.parallel.map_in_order` ends at n of n once the caller has
    every result (in one process and on a pool)."""
    from punl.core.parallel import map_in_order
    assert list(map_in_order(abs, [-1, -2, -3], workers, "jobs", progress=True)) == [1, 2, 3]
    err = capsys.readouterr().err
    assert "3/3" in err.splitlines()[-1].split("\r")[-1], err
