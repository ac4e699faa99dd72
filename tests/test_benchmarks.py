"""Every benchmark the README shows runs (in its tiny mode), so the commands cannot rot; the GPU
script fits a lent device and its full-size configuration is valid."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.__main__ import BENCHMARKS

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_runs_in_tiny_mode(name):
    done = subprocess.run([sys.executable, "-m", "benchmarks", name, "--tiny"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "torch threads: 1" in done.stdout
    assert len(done.stdout.strip().splitlines()) >= 3, done.stdout
    if name == "pergrad":  # the rules it timed, one line per convolution shape
        assert "channels at 32x32, 16 rows, cpu: " in done.stdout, done.stdout


def test_readme_lists_every_benchmark():
    readme = (REPO / "README.md").read_text()
    for name in BENCHMARKS:
        assert f"python -m benchmarks {name}" in readme, name


def _step_limits(script: str) -> dict[str, int]:
    """The seconds of every ``timeout N`` of each step of gpu.sh (a loop's counted per pass)."""
    body = script[script.index("for step in $STEPS"):]
    steps = dict(re.findall(r"^(\w+)\)\n(.*?);;", body, flags=re.S | re.M))
    limits = {}
    for name, text in steps.items():
        passes = re.search(r"for \w+ in ([\w ]+); do", text)
        each = len(passes.group(1).split()) if passes else 1
        limits[name] = each * sum(int(n) for n in re.findall(r"timeout (\d+)", text))
    return limits


def test_gpu_script_fits_a_lent_device():
    script = (REPO / "benchmarks/gpu.sh").read_text()
    assert subprocess.run(["bash", "-n", str(REPO / "benchmarks/gpu.sh")]).returncode == 0
    limits = _step_limits(script)
    assert set(limits) == {"tests", "bench", "resnet", "stages", "fashion"}
    # the two commands the script names for a device lent 10 minutes a command
    assert 'STEPS="tests resnet", then\n# STEPS=fashion' in script
    assert limits["tests"] + limits["resnet"] <= 570 and limits["fashion"] <= 570, limits


def test_full_size_gpu_configuration():
    from punl.core.config import load_config
    from punl.engine.models import build_model
    from punl.stages.resources import check_resources
    config = load_config("fashion-mnist-gpu")
    assert (config.dataset, config.n_train, config.device) == ("fashion-mnist", None, "cuda")
    model = build_model(config.model, (1, 28, 28), 10, config.width, config.depth)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    check_resources(config, 60_000)     # within the limits for all 60,000 training points


def test_plan_benchmark_records_one_configurations_rows_once(tmp_path):
    import pandas as pd

    from benchmarks.plan import record
    path = tmp_path / "plan.csv"
    rows = lambda config, t: [{"config": config, "stage": s, "predicted (s)": t,  # noqa: E731
                               "measured (s)": 2 * t, "ratio": 0.5} for s in ("train", "score")]
    record(rows("a", 1.0), str(path))
    record(rows("b", 3.0), str(path))
    record(rows("a", 5.0), str(path))       # a again: its rows replaced, b's kept
    table = pd.read_csv(path)
    assert list(zip(table.config, table["predicted (s)"])) == [
        ("b", 3.0), ("b", 3.0), ("a", 5.0), ("a", 5.0)]
