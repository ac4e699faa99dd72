"""Every benchmark the README shows runs (in its tiny mode), so the commands cannot rot."""
import subprocess
import sys
from pathlib import Path

import pytest

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
