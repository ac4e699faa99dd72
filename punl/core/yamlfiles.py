"""Reading configuration files: YAML that may not name a key twice (:func:`read_yaml`), a
configuration given by path or by the name of one punl ships (:func:`config_path`,
:func:`builtin_configs`), and the one error every invalid configuration raises
(:class:`ConfigError`, naming the field).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """An invalid configuration value or key; the message names the field."""


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error as one line: ``line 2, column 1: expected ',' or ']'...``."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(err).split())


def builtin_configs() -> dict[str, Path]:
    """Each configuration punl ships (``punl configs`` lists them), by name."""
    from .resources import resource
    return {p.stem: p for p in sorted(resource("configs").glob("*.yaml"))}


def config_path(path: str | Path) -> Path:
    """A YAML file, or a shipped configuration (``configs/<path>.yaml``) for a bare name."""
    from .resources import resource
    p = Path(path)
    if p.exists():
        return p
    builtin = resource("configs") / f"{path}.yaml"
    if not builtin.exists():
        raise ConfigError(f"config: no file {str(path)!r} and no configs/{path}.yaml")
    return builtin


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader refusing a mapping that names one key twice (plain YAML keeps the
    last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"config: {key!r} is given twice (line "
                                  f"{key_node.start_mark.line + 1}); give each field once")
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(p: Path) -> dict[str, Any]:
    """The mapping in a YAML configuration file, or ConfigError saying what is wrong."""
    try:
        values = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"config: {p} is not valid YAML ({yaml_problem(err)}); fix that "
                          "line") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config: {p} is not a text file; give a YAML configuration") from None
    except OSError as err:
        raise ConfigError(f"config: cannot read {p} ({err.strerror})") from None
    if values is None:
        raise ConfigError(f"config: {p} is empty; give at least one key: value line (an empty "
                          "file would run the built-in defaults)")
    if not isinstance(values, dict):
        raise ConfigError(f"config: {p} must hold a mapping of key: value lines, "
                          f"not a {type(values).__name__}")
    return values
