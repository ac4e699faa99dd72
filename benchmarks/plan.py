"""``punl plan``'s forecast against the stages it predicts, run afterwards on the same machine.

For one configuration (digits-quick by default, ``--config`` another): the forecast of
:mod:`punl.stages.forecast` (its probe's own time printed), then training, scoring, the per-point
study and the group study computed into a temporary folder, each stage's wall time read from its
record (or, with ``--measured FOLDER``, the stage records of a finished run of it there). Rows:
each stage's predicted and measured seconds and their ratio (predicted / measured), then the
stages together; with ``--tiny``, the tiny overrides of the test suite; ``--record FILE`` adds
the rows to a CSV file (``results/plan.csv`` keeps those the README states)."""
from __future__ import annotations

import tempfile

from punl.core.config import STAGES, load_config
from punl.core.store import ArtifactStore
from punl.stages.forecast import forecast, memory_text
from punl.stages.pipeline import ensure_pointwise, ensure_scored, ensure_unlearned, load_data, \
    stage_seconds

from .timing import print_rows

#: The test suite's tiny overrides of digits-quick (a few seconds of stages), in one process.
TINY = ["n_train=200", "runs=2", "epochs=2", "width=16", "group_size=8", "n_groups=2",
        "baseline_scores=[avg_grad_norm]", "unlearn_steps=8", "n_checkpoints=3",
        "retrain_seeds=4", "n_bootstrap=20", "n_permutations=50", "barrier_points=5",
        "heldout_requests=1", "point_models=48", "forget_probability=0.25", "record_every=null",
        "records_per_epoch=2", "workers=1"]


def measure(config) -> dict[str, float]:
    """Every stage of ``config`` computed from scratch in a temporary folder: its wall time."""
    with tempfile.TemporaryDirectory() as folder:
        store = ArtifactStore(folder)
        data = load_data(config)
        ensure_pointwise(config, store, data, progress=False)
        ensure_unlearned(config, store, data, progress=False)
        ensure_scored(config, store, data, progress=False)
        return stage_seconds(config, store)


def finished_run(config, folder: str) -> dict[str, float]:
    """The stage times a finished run of ``config`` in ``folder`` recorded (``--measured``)."""
    from pathlib import Path
    return stage_seconds(config, ArtifactStore(Path(folder) / "artifacts"))


def bench_plan(name: str, overrides: list[str], measured_in: str | None = None) -> list[dict]:
    config = load_config(name, overrides)
    predicted = forecast(config, progress=False)
    print(f"{name}: the probe took {predicted.probe_wall_seconds:.1f} s; at most "
          f"{memory_text(predicted.memory_bytes)} at once predicted")
    measured = finished_run(config, measured_in) if measured_in else measure(config)
    missing = [s for s in STAGES if s not in measured]
    if missing:
        raise SystemExit(f"--measured: {measured_in} holds no finished {', '.join(missing)} "
                         f"stage of {name}")
    rows = [{"config": name, "stage": s, "predicted (s)": predicted.stage(s).seconds,
             "measured (s)": measured[s], "ratio": predicted.stage(s).seconds / measured[s]}
            for s in STAGES]
    total = sum(measured.values())
    return rows + [{"config": name, "stage": "all four", "predicted (s)": predicted.seconds,
                    "measured (s)": total, "ratio": predicted.seconds / total}]


def record(rows: list[dict], path: str) -> None:
    """Append ``rows`` to the CSV file ``path`` (``--record``), its rows of the same
    configuration replaced."""
    import pandas as pd
    from pathlib import Path
    new = pd.DataFrame(rows)
    if Path(path).exists():
        old = pd.read_csv(path)
        new = pd.concat([old[old.config != rows[0]["config"]], new], ignore_index=True)
    new.round(3).to_csv(path, index=False)


def main(tiny: bool = False, device: str = "cpu", config: str = "digits-quick",
         measured: str | None = None, record_to: str | None = None) -> None:
    rows = bench_plan(config, [f"device={device}"] + (TINY if tiny else []), measured)
    print_rows(rows)
    if record_to:
        record(rows, record_to)
