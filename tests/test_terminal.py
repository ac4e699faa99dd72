"""A quiet terminal: progress and results, no warning repeated by every notebook's kernel."""
import os
import shutil
import subprocess
import sys

import pytest

from bookutil import REPO, TINY

KERNEL_NOISE = ("[IPKernelApp] WARNING", "without encryption", "IProgress not found")

EXECUTE_ONE = """
import nbformat, sys
from pathlib import Path
from punl.publish.plan import NotebookRun
from punl.commands.runner import execute_notebook
nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbformat.write(nb, "one.ipynb")
execute_notebook(NotebookRun(Path("one.ipynb"), Path("out/one.ipynb"), {}, Path.cwd()),
                 progress=False)
print(nbformat.read("out/one.ipynb", as_version=4).cells[0].outputs[0].text.strip())
"""


def environment() -> dict:
    """The environment of a subprocess that imports this checkout's punl."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


def assert_quiet(stderr: str) -> None:
    noisy = [line for line in stderr.splitlines() if any(n in line for n in KERNEL_NOISE)]
    assert not noisy, "\n".join(noisy)


def test_a_notebook_runs_without_kernel_warnings(tmp_path):
    done = subprocess.run([sys.executable, "-c", EXECUTE_ONE], cwd=tmp_path, env=environment(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("42")
    assert_quiet(done.stderr)


def test_notebooks_side_by_side_in_one_folder_keep_their_own_kernels(tmp_path):
    """Three notebooks executed at once from one working directory (as a sweep's points do):
    each kernel has its own sockets, so every one runs and none sees another's messages."""
    jobs = []
    for i in range(3):
        code = EXECUTE_ONE.replace('"one.ipynb"', f'"one{i}.ipynb"').replace(
            '"out/one.ipynb"', f'"out{i}/one.ipynb"').replace("6 * 7", f"6 * 7 + {i}")
        jobs.append(subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=environment(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for i, job in enumerate(jobs):
        out, err = job.communicate(timeout=300)
        assert job.returncode == 0, err[-2000:]
        assert out.strip().endswith(str(42 + i)) and "Invalid Signature" not in err


SHARED = """
import nbformat
from pathlib import Path
from punl.publish.plan import NotebookRun
from punl.commands.kernel import SharedKernel
from punl.commands.runner import NotebookError, execute_notebook

def notebook(name, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, name)
    return NotebookRun(Path(name), Path("out") / name, {}, Path.cwd())

with SharedKernel(Path.cwd()) as kernel:
    execute_notebook(notebook("a.ipynb", "import os\\nx = os.getpid()", "print(x)",
                              "import sys, weakref\\nclass Cycle: pass\\ncycle = Cycle()\\n"
                              "cycle.me = cycle\\nsys.punl_probe = weakref.ref(cycle)"),
                     False, kernel)
    try:
        execute_notebook(notebook("b.ipynb", "print(x)"), False, kernel)
    except NotebookError as err:
        print("b:", err.ename)
    execute_notebook(notebook("c.ipynb", "import os\\npid = os.getpid()", "print(pid)",
                              "import sys\\nprint(sys.punl_probe() is None)"), False, kernel)
a, c = (nbformat.read(f"out/{n}.ipynb", as_version=4) for n in "ac")
print("counts", [cell.execution_count for cell in c.cells])
print("outputs", [len(cell.outputs) for cell in c.cells])
print("one kernel", a.cells[1].outputs[0].text == c.cells[1].outputs[0].text)
print("a's cycle freed", c.cells[2].outputs[0].text.strip())
"""


def test_a_runs_notebooks_share_one_kernel_that_forgets_between_them(tmp_path):
    """A run's notebooks execute in one kernel (:mod:`punl.commands.kernel`): the second sees
    no name the first defined (NameError, as alone), the third counts its cells from one with
    no history warning among its outputs, in the first's process, where the garbage the first
    left in a reference cycle has been collected (not frozen with what survives a reset)."""
    done = subprocess.run([sys.executable, "-c", SHARED], cwd=tmp_path, env=environment(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines == ["b: NameError", "counts [1, 2, 3]", "outputs [0, 1, 1]", "one kernel True",
                     "a's cycle freed True"], lines
    assert_quiet(done.stderr)


@pytest.mark.slow
def test_punl_run_prints_progress_and_results_only(tiny_run, tmp_path):
    """``punl run`` on the tiny configuration (its stages copied from the tiny run, so only the
    notebooks execute): no kernel warning on stderr, the notebooks' times on stdout."""
    shutil.copytree(tiny_run["root"] / "runs/tiny/artifacts", tmp_path / "out/artifacts")
    overrides = [arg for o in TINY for arg in ("--set", o)]
    done = subprocess.run([sys.executable, "-m", "punl.commands.cli", "run", "digits-quick", *overrides,
                           "--out", "out", "--book-dir", "book"], cwd=tmp_path,
                          env=environment(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_quiet(done.stderr)
    assert "notebooks" in done.stderr                       # the progress bar
    assert "06_summary.ipynb:" in done.stdout and "'reused'" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if "warning" in line.lower()]
    assert not warnings, "\n".join(warnings)
