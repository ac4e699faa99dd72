"""The package's shape: stages import only earlier stages, the config stands alone, every
configuration field belongs to a stage."""
import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from punl.core.config import RUNTIME, STAGES, Config, stage_fields

PACKAGE = Path(__file__).resolve().parent.parent / "punl"

# Upstream first: a module may import only modules listed before it.
ORDER = [
    "catalog", "methods", "tables", "config", "parallel",
    "data", "models", "pergrad", "multimodel", "sgd", "recipe", "ledger", "train",
    "privacy", "metrics", "mia", "groups", "shadow", "scores", "barriers", "unlearn",
    "pointwise",
    "fits", "lawtest", "power", "analysis", "pointclaims", "claims", "findings", "predict", "heldout", "adaptive", "pointpredict", "plots", "pointplots", "store", "outputs", "preflight", "pipeline",
    "notebook", "plan", "book",
    "runner", "sweep",
    "cli",
]


#: Inside each sub-package, upstream first likewise.
SUBPACKAGE_ORDERS = {
    "pergrad": ["registry", "functional", "stacked", "linear", "conv2d", "groupnorm", "norms",
                "clipped", "__init__"],
    "plots": ["style", "training", "scores", "unlearning", "barriers", "prediction", "runs",
              "__init__"],
}


def punl_imports(path: Path, level: int = 1) -> set[str]:
    """Names of the modules of one package a file imports anywhere (top level or inside
    functions): ``level`` 1 for a module of punl itself, 2 for a module of one of its
    sub-packages (whose level-1 imports are its siblings: :func:`sibling_imports`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == level and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == level:  # from . import x: a module, or a name of __init__
                package = path.parents[level - 1]
                found.update(a.name if (package / f"{a.name}.py").exists()
                             or (package / a.name).is_dir() else "__init__" for a in node.names)
            elif node.module and node.module.startswith("punl."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("punl."))
    return found


def module_files(module: str) -> list[Path]:
    """The files of a punl module: itself, or every file of a sub-package."""
    folder = PACKAGE / module
    return sorted(folder.glob("*.py")) if folder.is_dir() else [PACKAGE / f"{module}.py"]


def test_every_module_is_placed_in_the_order():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert modules | packages == set(ORDER)
    assert packages == set(SUBPACKAGE_ORDERS)
    for package, order in SUBPACKAGE_ORDERS.items():
        assert {p.stem for p in (PACKAGE / package).glob("*.py")} == set(order)


@pytest.mark.parametrize("module", ORDER)
def test_a_stage_imports_only_earlier_stages(module):
    files = module_files(module)
    level = 2 if len(files) > 1 or files[0].parent != PACKAGE else 1
    later = {m for f in files for m in punl_imports(f, level) if m != "__init__"}
    bad = {m for m in later if ORDER.index(m) >= ORDER.index(module)}
    assert not bad, f"{module} imports {sorted(bad)}, which come at or after it"


@pytest.mark.parametrize("package, module", [(p, m) for p, order in SUBPACKAGE_ORDERS.items()
                                              for m in order])
def test_a_subpackage_module_imports_only_earlier_ones(package, module):
    order = SUBPACKAGE_ORDERS[package]
    later = punl_imports(PACKAGE / package / f"{module}.py", level=1)
    assert later <= set(order), f"{package}.{module} imports {sorted(later - set(order))} as " \
                                "siblings (a module of punl is imported with ..)"
    bad = {m for m in later if order.index(m) >= order.index(module)}
    assert not bad, f"{package}.{module} imports {sorted(bad)}, which come at or after it"


def test_the_order_check_catches_a_circle(tmp_path):
    path = tmp_path / "config.py"
    path.write_text("def f():\n    from .unlearn import METHODS\n")
    assert "unlearn" in punl_imports(path)
    inner = tmp_path / "pergrad" / "registry.py"
    inner.parent.mkdir()
    inner.write_text("from ..sgd import step\nfrom .clipped import ClippedSums\n")
    assert punl_imports(inner, level=2) == {"sgd"}
    assert punl_imports(inner, level=1) == {"clipped"}


def test_configuration_loads_without_torch():
    code = ("import sys; from punl.core.config import load_config; load_config('digits-quick'); "
            "print(sorted(m for m in ('torch', 'punl.engine.train', 'punl.study.unlearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _changed(field: dataclasses.Field):
    value = getattr(Config(), field.name)
    alternatives = {bool: not value, int: value + 1 if isinstance(value, int) else 1,
                    float: value * 1.5 if isinstance(value, float) and value else 0.1}
    if field.name == "name":
        return "other-name"
    if field.name in ("dataset", "model"):
        return {"dataset": "synthetic", "model": "logreg"}[field.name]
    if field.name == "device":
        return "auto"
    if field.name == "data_root":
        return "elsewhere"
    if field.name == "orders":
        return (2.0, 8.0)
    if field.name == "methods":
        return ("sgld", "finetune", "l1_sparse")
    if field.name == "primary_method":
        return "finetune"
    if field.name == "level":
        return 0.1
    if field.name == "primary_score":
        return "privacy_loss_a4"
    if field.name == "baseline_scores":
        return ("el2n",)
    if field.name in ("n_train", "chunk_size", "unlearn_lr", "utility_points"):
        return 100 if field.name != "unlearn_lr" else 0.05
    if field.name == "shadow_models":
        return 4
    if field.name == "records_per_epoch":
        return 2.0
    if field.name == "point_models":
        return 128
    return alternatives[type(value)]


@pytest.mark.parametrize("field", dataclasses.fields(Config), ids=lambda f: f.name)
def test_every_field_changes_exactly_its_stage_keys(field):
    stage = field.metadata["stage"]
    assert stage in (*STAGES, RUNTIME)
    base = Config()
    changes = {field.name: _changed(field)}
    if field.name == "records_per_epoch":    # one of the two record schedules is set
        changes["record_every"] = None
    other = base.replace(**changes)
    assert getattr(other, field.name) != getattr(base, field.name)
    changed = [s for s in STAGES if base.stage_key(s) != other.stage_key(s)]
    assert changed == STAGE_FIELDS_CHANGE[stage].get(field.name, STAGE_FIELDS_CHANGE[stage][None])


# The stage keys a field of each stage changes: its own stage and those downstream of it; an
# unlearning field that the per-point study reads changes both studies.
STAGE_FIELDS_CHANGE = {
    "train": {None: ["train", "score", "pointwise", "unlearn"]},
    "score": {None: ["score", "unlearn"]},
    "pointwise": {None: ["pointwise"]},
    "unlearn": {None: ["unlearn"], **{name: ["pointwise", "unlearn"] for name in (
        "primary_method", "unlearn_steps", "n_checkpoints", "unlearn_lr", "l1_penalty")}},
    RUNTIME: {None: []},
}


def test_stage_fields_partition_the_configuration():
    declared = [n for s in (*STAGES, RUNTIME) for n in stage_fields(s)]
    assert sorted(declared) == sorted(f.name for f in dataclasses.fields(Config))


def test_catalog_names_have_implementations():
    from punl.core.catalog import DATASETS, MODELS
    from punl.engine.data import load_dataset
    from punl.engine.models import build_model
    for name in MODELS:
        build_model(name, (3, 8, 8), 4, width=4)
    for name in ("digits", "synthetic"):
        assert load_dataset(name).n_train > 0
    assert set(DATASETS) >= {"digits", "mnist5k", "mnist", "svhn", "cifar10", "synthetic"}
