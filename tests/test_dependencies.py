"""The declared dependencies and the pinned set agree, so that pip, make, .ci/run and conda
resolve the same packages: every package pyproject.toml declares (with its dev extra) is pinned
in constraints.txt at a version inside the declared range, and environment.yml installs through
those pins with the Python the project supports."""
import re
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from bookutil import REPO


def pins() -> dict[str, str]:
    """constraints.txt as {canonical name: pinned version}."""
    out = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            out[canonicalize_name(re.sub(r"\[.*\]", "", name))] = version.strip()
    return out


def declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in
            project["dependencies"] + project["optional-dependencies"]["dev"]]


def test_every_declared_package_is_pinned_inside_its_range():
    pinned = pins()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is declared but not pinned in constraints.txt"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            name, str(requirement.specifier), pinned[name])


def test_the_conda_environment_installs_through_the_pins():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(python.split("=")[1] + ".0")
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ["-c constraints.txt", "-e .[dev]"]
