"""punl as a user installs it: the wheel holds the configurations, notebook templates and the
book's skeleton, and a tiny book is made from them outside the source tree.

The wheel is built from this checkout and installed, without dependencies, into a fresh
virtual environment; that environment sees this one's packages (torch and the rest) through a
``.pth`` file, which adds their folder but not this checkout's editable punl."""
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from bookutil import REPO, TINY_SETTINGS

pytestmark = pytest.mark.slow

def run(argv, cwd, env, timeout=600) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, (argv, done.stdout[-2000:], done.stderr[-3000:])
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel, and a fresh environment with it installed; its ``bin`` first on PATH."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {**os.environ, "PYTHONPATH": ""}
    # from a copy of the sources, so that no build folder of the checkout leaks into it
    source = shutil.copytree(REPO, tmp / "source", ignore=shutil.ignore_patterns(
        ".git", ".venv", "_build", "build", "runs", "*.egg-info", "__pycache__", ".hypothesis"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp / "dist"), str(source)], tmp, env)
    wheel = next((tmp / "dist").glob("punl-*.whl"))
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    site = Path(run([str(venv / "bin" / "python"), "-c",
                     "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp, env)
                .stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--no-deps", "-q", str(wheel)], tmp, env)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}{os.pathsep}{Path(sys.executable).parent}"
    return {"wheel": wheel, "venv": venv, "env": env, "tmp": tmp}


def test_the_wheel_holds_configs_templates_and_the_book_skeleton(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    shared = {n.split("/share/punl/", 1)[1] for n in names if "/share/punl/" in n}
    assert {p.name for p in (REPO / "configs").glob("*.yaml")} <= {
        n.removeprefix("configs/") for n in shared}
    assert {f"notebooks/{p.name}" for p in (REPO / "notebooks").glob("0*.ipynb")} <= shared
    assert {"_config.yml", "_ext/unique_scripts.py", "_static/punl.css", "book/intro.md",
            "book/methods.md", "book/reproduce.md"} <= shared


def test_a_tiny_book_from_the_installed_wheel_outside_the_source_tree(installed):
    env, outside = installed["env"], installed["tmp"] / "outside"
    outside.mkdir()
    found = run(["python", "-c", "import punl; print(punl.__file__)"], outside, env).stdout
    assert found.startswith(str(installed["venv"])), found          # the wheel's punl
    assert "digits-quick" in run(["punl", "configs"], outside, env).stdout
    run(["punl", "init", "mybook"], outside, env)
    book = outside / "mybook"
    argv = ["punl", "run", "digits-quick", "--quiet"]
    run(argv + [a for o in TINY_SETTINGS for a in ("--set", o)], book, env)
    run(["punl", "book"], book, env)
    html = book / "_build" / "html"
    chapters = list((html / "book" / "runs").glob("digits-quick-*/04_unlearn.html"))
    assert len(chapters) == 1 and "What we found" in chapters[0].read_text()
    refused = subprocess.run(["punl", "init", "mybook"], cwd=outside, env=env,
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "already holds _config.yml" in refused.stderr
