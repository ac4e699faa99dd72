"""Every command the README shows, and every `punl` line of the Makefile targets it names, runs:
in a tiny book root, with the tiny configuration's overrides added, so the README cannot rot.

Commands tested elsewhere are named here with the test that runs them: the benchmarks
(``tests/test_benchmarks.py``), ``punl predict`` (``tests/test_predict_run.py``) and the
browser test itself. A command the README gains without a way to run it here fails
:func:`test_every_readme_command_has_a_runner`."""
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from bookutil import REPO, TINY_SETTINGS, make_book_root, make_notebooks_dir

RUN_ELSEWHERE = {"python -m benchmarks": "tests/test_benchmarks.py",
                 "punl predict": "tests/test_predict_run.py",
                 "python -m pytest -q tests/test_browser.py": "tests/test_browser.py",
                 "make test-all": ".ci/run (CI runs it)"}


def readme_blocks(language: str) -> list[str]:
    """The README's fenced code blocks in ``language``."""
    text = (REPO / "README.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def readme_commands() -> list[str]:
    """Every command line of the README's bash blocks, comments removed."""
    lines = [line.split("#")[0].strip() for block in readme_blocks("bash")
             for line in block.splitlines()]
    return [line for line in lines if line]


#: The Makefile's grids in tiny mode (``make book-full SEEDS=0,1 FASHION_SEEDS=0
#: SIGMAS=0.5,1.0``): each point is a whole run, so fewer seeds, and sigmas that the README's
#: own sweep ran before.
TINY_MAKE_VARIABLES = {"SEEDS": "0,1", "FASHION_SEEDS": "0", "SIGMAS": "0.5,1.0"}


def makefile_variables() -> dict[str, str]:
    """The Makefile's own variables (``NAME ?= value``)."""
    return dict(re.findall(r"^(\w+)\s*\?=\s*(.*)$", (REPO / "Makefile").read_text(), flags=re.M))


def make_commands(target: str, variables: dict[str, str] | None = None) -> list[str]:
    """The ``punl`` lines of a Makefile target's recipe, variables expanded (``variables`` given
    on make's command line override the Makefile's own)."""
    text = (REPO / "Makefile").read_text()
    vars_ = {**makefile_variables(), **(variables or {})}
    recipe = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, flags=re.M).group(1)
    lines = [line.strip().replace("$(BIN)/", "") for line in recipe.splitlines()]
    return [re.sub(r"\$\((\w+)\)", lambda m: vars_[m.group(1)], line) for line in lines
            if line.startswith("punl ")]


def tiny_argv(command: str, scheduler: str | None = None) -> list[str]:
    """The command's arguments after ``punl`` with the tiny settings added (runs, sweeps, plans),
    the placeholder dask address replaced by ``scheduler``."""
    argv = shlex.split(command)[1:]
    if argv[0] in ("run", "sweep", "plan"):
        argv += [a for o in TINY_SETTINGS for a in ("--set", o)]
    return [scheduler if a == "tcp://HOST:8786" else a for a in argv]


def runner_for(command: str) -> str:
    """How this file runs ``command``, or what runs it elsewhere; KeyError when nothing does."""
    for prefix, where in RUN_ELSEWHERE.items():
        if command.startswith(prefix):
            return where
    if command.startswith(("punl ", "python tests/sitecheck.py", "papermill notebooks/")):
        return "here"
    if command in ("make book", "make book-full"):
        return "here, through the target's punl lines"
    raise KeyError(command)


def test_every_readme_command_has_a_runner():
    commands = readme_commands()
    assert "make book" in commands and "make test-all" in commands
    for command in commands:
        runner_for(command)
    assert make_commands("book") == ["punl run digits-quick", "punl book"]
    assert any(c.startswith("punl sweep") for c in make_commands("book-full"))


def test_the_books_reproduce_page_names_what_book_full_runs():
    """The book's line for ``make book-full`` (with its comment's continuation lines) names
    every configuration the target runs or sweeps, and the seeds it replicates over, so that it
    cannot fall behind the Makefile."""
    page = (REPO / "book" / "reproduce.md").read_text()
    line = re.search(r"^make book-full.*\n(?:\s+#.*\n)*", page, re.M).group(0)
    line = " ".join(part.strip(" #") for part in line.splitlines())
    names = {shlex.split(c)[2] for c in make_commands("book-full")
             if c.startswith(("punl run ", "punl sweep "))}
    named = lambda name: re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", line)  # noqa: E731
    assert names and all(named(name) for name in names), (names, line)
    grids = makefile_variables()
    words = {4: "four", 5: "five"}
    for config, variable in (("digits-quick", "SEEDS"), ("fashion-mnist", "FASHION_SEEDS")):
        assert f"{config} at {words[len(grids[variable].split(','))]} seeds" in line, variable


@pytest.fixture(scope="module")
def scheduler():
    """A local dask cluster standing in for the README's ``tcp://HOST:8786``."""
    from distributed import LocalCluster
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def run_all(commands: list[str], scheduler: str | None = None) -> None:
    """Run each ``punl`` command once (tiny), in order, each expected to succeed."""
    from punl.commands.cli import main
    for command in dict.fromkeys(commands):
        assert main(tiny_argv(command, scheduler)) == 0, command


def papermill_argv(command: str) -> list[str]:
    """A README papermill command with the tiny settings added to its overrides (so that it
    opens the tiny run the README's ``punl run`` made), run by this Python's papermill."""
    argv = shlex.split(command)
    at = argv.index("-y") + 1
    overrides = yaml.safe_load(argv[at])["overrides"]
    argv[at] = yaml.safe_dump({"overrides": [*overrides, *TINY_SETTINGS]})
    return [sys.executable, "-m", *argv]


def readme_punl_commands() -> list[str]:
    """The ``punl`` commands the README shows outside the Makefile targets, in its order, less
    ``punl book`` (which runs once, at the end)."""
    return [c for c in readme_commands() if c.startswith("punl ") and c != "punl book"
            and runner_for(c) == "here"]


@pytest.fixture(scope="module")
def followed(tmp_path_factory, scheduler):
    """A book root (the repository's configurations copied in, the working folder) where a user
    followed the README (tiny): every ``punl`` command it shows, in its order, and its
    papermill commands; then every ``punl`` line of ``make book`` and ``make book-full``
    (:data:`TINY_MAKE_VARIABLES`); then ``punl book``. Runs and sweep points that the two share
    are reused, as they are for a user."""
    from punl.commands.cli import main
    root = make_book_root(tmp_path_factory.mktemp("readme") / "root")
    shutil.copytree(REPO / "configs", root / "configs")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        run_all(readme_punl_commands(), scheduler)
        assert main(["book", "--no-build"]) == 0
        make_notebooks_dir(root / "notebooks")
        for command in [c for c in readme_commands() if c.startswith("papermill ")]:
            done = subprocess.run(papermill_argv(command), cwd=root, capture_output=True,
                                  text=True, timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]
        make = make_commands("book", TINY_MAKE_VARIABLES) + make_commands(
            "book-full", TINY_MAKE_VARIABLES)
        run_all([c for c in make if c != "punl book"])
        assert main(["book"]) == 0
    return root


@pytest.mark.slow
def test_readme_commands_run_in_tiny_mode(followed):
    """Every command the README shows outside the Makefile targets ran and left what it says:
    the named run, the sweeps' points, a notebook executed by papermill, a new book folder."""
    assert (followed / "runs/my-run/published/run.json").exists()
    # a run with settings (here the tiny ones) is named after them: runs/mnist5k-<digest>
    assert list((followed / "runs").glob("mnist5k-*/published/run.json"))
    points = {p.name for p in (followed / "runs/sweeps/digits-quick-sigma").iterdir()
              if (p / "published/run.json").exists()}
    assert {f"digits-quick-sigma-{s}" for s in ("0.3", "0.5", "1.0")} <= points, points
    executed = nbformat.read(followed / "my-04.ipynb", as_version=4)
    assert any(c.get("outputs") for c in executed.cells)
    assert (followed / "mybook/_config.yml").exists()


@pytest.mark.slow
def test_make_targets_run_in_tiny_mode(followed):
    """Every ``punl`` line of ``make book`` and ``make book-full`` (tiny) ran, the book they
    build holds the sweeps, the replication over seeds reaches its front page, and the README's
    site check passes on it."""
    html = followed / "_build" / "html"
    assert (html / "index.html").exists()
    assert sorted(p.name for p in (followed / "book" / "sweeps").iterdir()) == sorted(
        {"digits-quick-sigma", "digits-quick-seed", "fashion-mnist-seed"})
    # each replication over seeds reaches the front page (the summary chapter of a run made
    # after it reads it too: tests/test_sweep.py)
    front = (html / "book" / "intro.html").read_text()
    for sweep, variable in (("digits-quick-seed", "SEEDS"), ("fashion-mnist-seed",
                                                            "FASHION_SEEDS")):
        assert (followed / "book" / "sweeps" / sweep / "replication.parquet").exists()
        seeds = len(TINY_MAKE_VARIABLES[variable].split(","))
        assert f"over {seeds} seed{'s' if seeds > 1 else ''}:" in front, sweep
    checks = [c for c in readme_commands() if c.startswith("python tests/sitecheck.py")]
    assert checks
    for command in checks:
        argv = shlex.split(command)[1:]
        done = subprocess.run([sys.executable, str(REPO / argv[0]), str(html)], cwd=followed,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


#: Which test runs each Python block of the README, as a script in a subprocess (a block that
#: a test ``exec``s would hide a missing ``if __name__ == "__main__":`` guard).
PYTHON_BLOCKS = {"ensure_unlearned": "test_readme_python_example_runs_as_a_script_in_tiny_mode",
                 "PrivacyAccountant": "test_readme_own_model_script_runs_as_a_script",
                 "predict_request": "tests/test_predict_run.py"}


def run_script(text: str, folder: Path) -> subprocess.CompletedProcess:
    """``text`` saved as ``folder/example.py`` and run as ``python example.py`` there."""
    (folder / "example.py").write_text(text)
    return subprocess.run([sys.executable, "example.py"], cwd=folder, capture_output=True,
                          text=True, timeout=900)


def test_every_readme_python_block_has_a_runner():
    blocks = readme_blocks("python")
    assert blocks and all(sum(key in b for key in PYTHON_BLOCKS) == 1 for b in blocks), blocks


def test_readme_own_model_script_runs_as_a_script(tmp_path):
    """The own-model example as a user runs it; its printed median is "about a third" of the
    largest epsilon, as the README says."""
    block = next(b for b in readme_blocks("python") if "PrivacyAccountant" in b)
    done = run_script(block, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(r"min ([\d.]+), median ([\d.]+), max ([\d.]+)", done.stdout)
    low, median, high = map(float, found.groups())
    assert 0 < low < median < high and 0.25 < median / high < 0.45, done.stdout


@pytest.mark.slow
def test_readme_python_example_runs_as_a_script_in_tiny_mode(tmp_path):
    """The README's "From Python" block as a script (its stages start worker processes, which
    import the script again), with the tiny settings added to its configuration."""
    block = next(b for b in readme_blocks("python") if "ensure_unlearned" in b)
    given = 'load_config("digits-quick", ["sigma=0.3"])'
    assert given in block
    block = block.replace(given, f'load_config("digits-quick", ["sigma=0.3", *{TINY_SETTINGS!r}])')
    done = run_script(block, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    groups = int(re.search(r"200 points scored, (\d+) groups unlearned", done.stdout).group(1))
    assert groups > 0 and (tmp_path / "runs/my-run/artifacts").is_dir()
