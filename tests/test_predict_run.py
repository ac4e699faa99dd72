"""Held-out requests and predictions in a tiny end-to-end run: the held-out groups are unlearned
and validated but change no claim, the adaptive rule reproduces the recorded trajectories, and
every `punl predict` command of the README runs."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bookutil import TINY
from punl.commands.cli import main
from punl.core.tables import UnlearnTables

REPO = Path(__file__).resolve().parent.parent
HELDOUT_KINDS = {"heldout_random", "heldout_mixed", "heldout_class"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny configuration (one held-out request of each kind), unlearned into
    ``<root>/runs/digits-quick`` (where the README's commands look for it)."""
    root = tmp_path_factory.mktemp("predict")
    argv = ["unlearn", "digits-quick", *(a for o in TINY for a in ("--set", o)),
            "--out", str(root / "runs/digits-quick")]
    assert main(argv) == 0
    published = root / "runs/digits-quick/published"
    return {"root": root, "published": published,
            "tables": {p.stem: pd.read_parquet(p) for p in published.glob("*.parquet")}}


def test_heldout_requests_are_unlearned_and_predicted(tiny):
    t = tiny["tables"]
    kinds = t["groups"].set_index("group").kind
    assert {kinds["r0"], kinds["mix0"], kinds["cls0"]} == HELDOUT_KINDS
    assert t["groups"].set_index("group").loc["cls0", "classes"] == 1
    assert {"r0", "mix0", "cls0"} <= set(t["steps"].group) and {"r0", "mix0", "cls0"} <= set(
        t["attack"].group)
    held = t["heldout_predictions"]
    assert set(held.group) == {"r0", "mix0", "cls0"} and set(held.kind) == HELDOUT_KINDS
    assert len(held) == 3 * 3 * 4             # requests x aggregations x predictor scores
    assert (held.steps_low <= held.predicted_steps).all()
    assert (held.predicted_steps <= held.steps_high).all()
    validation = t["prediction_validation"]
    assert set(validation.requests) == {"all", *HELDOUT_KINDS}
    assert (validation[validation.requests == "all"].n_requests == 3).all()
    assert len(t["adaptive"]) == len(held) and (t["adaptive"].steps_used <= 8).all()
    # the mixed request: its hard point comes from the top tenth of the privacy-loss ranking
    scores = t["scores"].set_index("index")
    members = t["points"][(t["points"].group == "mix0") & (t["points"].step == 0)
                          & (t["points"].method == "sgld")]["index"]
    top_tenth = scores.privacy_loss_a8.rank(pct=True) > 0.9
    assert top_tenth[members].sum() >= 1 and (~top_tenth[members]).sum() >= len(members) - 2


def test_claims_do_not_depend_on_heldout_requests(tiny):
    from punl.core.config import load_config
    from punl.stages.pipeline import claims, study
    t = tiny["tables"]
    config = load_config("digits-quick", TINY)
    tables = UnlearnTables(**{n: t[n] for n in UnlearnTables.SPECS})
    held = set(t["groups"][t["groups"].kind.isin(HELDOUT_KINDS)].group)
    without = UnlearnTables(**{n: f[~f.group.isin(held)].reset_index(drop=True)
                               for n, f in tables.items()})
    with_them = claims(study(config, tables, t["scores"], 200))
    pd.testing.assert_frame_equal(with_them, claims(study(config, without, t["scores"], 200)))


def test_the_law_tests_simulations_are_an_analysis_field(tiny):
    """``law_simulations`` reaches claim 2's law test, and changes the claims table's cache key
    but no stage key (the stages are reused, the claims recomputed)."""
    from punl.analysis.claims import Choice, law_result
    from punl.core.config import STAGES, load_config
    from punl.stages.pipeline import claims_key, study
    t = tiny["tables"]
    config = load_config("digits-quick", TINY)
    more = config.replace(law_simulations=config.law_simulations + 5)
    assert claims_key(more) != claims_key(config)
    assert all(more.stage_key(s) == config.stage_key(s) for s in STAGES)
    tables = UnlearnTables(**{n: t[n] for n in UnlearnTables.SPECS})
    s = study(more, tables, t["scores"], 200, t["point_steps"])
    law = law_result(s, Choice(more.level, "all", more.primary_score))
    assert law.law.simulations == more.law_simulations


def test_adaptive_unlearning_reproduces_the_recorded_group(tiny):
    """Run on a recorded group with its label, the rule's models at each look are the run's
    models at that checkpoint: the per-point divergences agree."""
    from punl.analysis.adaptive import adaptive_unlearn
    from punl.study.mia import gaussian_kl
    from punl.stages.pipeline import TrainedRuns, load_data, published_run, reuse
    from punl.core.store import ArtifactStore
    run = published_run(tiny["root"] / "runs/digits-quick")
    trained = reuse(run.config, ArtifactStore(run.folder / "artifacts"), "train",
                    TrainedRuns.load)
    pts = tiny["tables"]["points"]
    top = pts[(pts.group == "top") & (pts.score == "privacy_loss_a8") & (pts.method == "sgld")]
    indices = np.sort(top[top.step == 0]["index"].to_numpy())
    result = adaptive_unlearn(run.config, load_data(run.config), trained.final, indices, "sgld",
                              first_look=1, budget=8, growth=8, label="top")
    assert list(result.looks.step) == [1, 8][:len(result.looks)]
    assert result.passed == bool(result.looks.adjusted_p.iloc[-1] > run.config.level)
    assert (result.looks.adjusted_p.iloc[:-1] <= run.config.level).all()   # earlier looks failed
    n_u = run.config.runs
    for j, k in enumerate(result.looks.step):
        recorded = top[top.step == k].sort_values("index").kl.to_numpy()
        live = gaussian_kl(result.phi[j][:n_u], result.phi[j][n_u:])
        np.testing.assert_allclose(live, recorded, rtol=1e-5, atol=1e-8)


def readme_predict_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    return [line.split("#")[0].strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)
            for line in block.splitlines() if line.startswith("punl predict")]


@pytest.mark.slow
def test_every_readme_predict_command_runs(tiny):
    commands = readme_predict_commands()
    assert len(commands) >= 3 and any("--adaptive" in c for c in commands)
    root = tiny["root"]
    indices = np.arange(10, 18)
    (root / "request.txt").write_text("\n".join(map(str, indices)) + "\n")
    np.save(root / "request.npy", indices)
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "punl.commands.cli", *command.split()[1:]],
                              cwd=root, capture_output=True, text=True, timeout=300,
                              env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, (command, done.stderr[-2000:])
        assert "steps" in done.stdout, command
        groups = "--aggregate" in command or "--eps" in command       # else per point
        marker = {(True, False): "measured groups", (True, True): '"calibration_groups"',
                  (False, False): "the request (its slowest point)",
                  (False, True): '"fitted_points"'}[groups, "--json" in command]
        assert marker in done.stdout, command


@pytest.mark.slow
def test_readme_predict_python_block_runs(tiny):
    """The README's Python example of prediction, as a script in the tiny run's root."""
    text = (REPO / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S)
                 if "predict_request" in b)
    (tiny["root"] / "example.py").write_text(block)
    done = subprocess.run([sys.executable, "example.py"], cwd=tiny["root"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # the group prediction's summary, then the per-point request: fitted on all 200 points,
    # one line for each of its three points
    out = done.stdout
    assert "request of 3 points" in out and "fitted on the 200 points" in out, out
    rows = re.findall(r"^\s+(\d+)\s+\S+\s+\S+", out.split("index  score")[-1], re.M)
    assert [int(r) for r in rows] == [3, 17, 42], out
