"""The package's shape: stages import only earlier stages, the config stands alone, every
configuration field belongs to a stage."""
import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from punl.core.config import ANALYSIS, RUNTIME, STAGES, Config, stage_fields

PACKAGE = Path(__file__).resolve().parent.parent / "punl"

#: The layers, upstream first, and each layer's modules, upstream first: a module may import only
#: the layers before its own and the modules before it in its layer.
LAYERS = {
    "core": ["catalog", "methods", "tables", "resources", "yamlfiles", "config", "parallel", "store", "outputs"],
    "engine": ["data", "models", "pergrad", "multimodel", "sgd", "recipe", "ledger", "train",
               "privacy", "accountant", "metrics"],
    "study": ["mia", "groups", "shadow", "scores", "barriers", "unlearn", "pointwise"],
    "analysis": ["fits", "lawtest", "power", "measures", "barriers", "pointclaims", "claims",
                 "findings", "predict", "heldout", "adaptive", "pointpredict"],
    "stages": ["resources", "preflight", "convergence", "pipeline", "forecast"],
    "publish": ["plots", "pointplots", "reading", "plan", "markdown", "notebook", "chapters",
                "landing", "book"],
    "commands": ["kernel", "runner", "sweep", "listing", "cli"],
}
#: Inside each sub-package of a layer, upstream first likewise (its ``__init__`` last).
SUBPACKAGE_ORDERS = {
    "engine.pergrad": ["registry", "functional", "stacked", "linear", "conv2d", "groupnorm",
                       "norms", "clipped", "__init__"],
    "publish.plots": ["style", "training", "scores", "unlearning", "barriers", "prediction",
                      "runs", "__init__"],
}


def upstream_order() -> list[str]:
    """Every module of punl by dotted name, upstream first (a sub-package as its modules, its
    ``__init__`` named by the package itself)."""
    order = []
    for layer, modules in LAYERS.items():
        for module in modules:
            inner = SUBPACKAGE_ORDERS.get(f"{layer}.{module}", ["__init__"])
            order += [f"punl.{layer}.{module}" + ("" if m == "__init__" else f".{m}")
                      for m in inner]
    return order


ORDER = upstream_order()


def dotted_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(package: str, name: str) -> str:
    """``package.name`` where that is a module or package of punl, else ``package``."""
    path = PACKAGE.parent.joinpath(*package.split("."), name)
    return f"{package}.{name}" if path.with_suffix(".py").exists() or path.is_dir() else package


def punl_imports(path: Path) -> set[str]:
    """The modules of punl (dotted names) a file imports anywhere, top level or inside
    functions, relative imports resolved."""
    name = dotted_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            if source == "punl" or source.startswith("punl."):
                found.update(_resolve(source, a.name) for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("punl."))
    return found


def source_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_the_claims_key_covers_what_the_claims_analyses_import():
    """Every module of punl that an analysis module of the claims key imports counts in the key
    too, so that a change to it recomputes the cached claims tables."""
    from punl.stages.pipeline import CLAIMS_CODE
    keyed = {"punl." + m.replace("/", ".") for m in CLAIMS_CODE}
    for module in [m for m in keyed if m.startswith("punl.analysis.")]:
        path = PACKAGE.parent.joinpath(*module.split(".")).with_suffix(".py")
        assert punl_imports(path) - {"punl.analysis"} <= keyed, module


def test_every_module_is_placed_in_the_order():
    layer_inits = {f"punl.{layer}" for layer in LAYERS}
    modules = {dotted_name(p) for p in source_files()} - {"punl"} - layer_inits
    assert modules == set(ORDER)
    assert {p.parent.name for p in PACKAGE.glob("*/__init__.py")} == set(LAYERS)


def test_every_layer_says_what_it_holds_and_may_import():
    for layer in LAYERS:
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
        assert doc and "May import" in doc, layer
        for module in LAYERS[layer]:
            assert f":mod:`.{module}`" in doc, f"{layer} does not name {module}"


@pytest.mark.parametrize("path", source_files(), ids=lambda p: dotted_name(p))
def test_a_module_imports_only_upstream_ones(path):
    name = dotted_name(path)
    if name == "punl" or name in {f"punl.{layer}" for layer in LAYERS}:
        # the package's lazy exports (punl.__getattr__) are its only imports
        exported = {"punl.engine.pergrad", "punl.engine.privacy", "punl.engine.accountant"}
        assert not punl_imports(path) - exported, "a layer imports nothing"
        return
    imported = punl_imports(path) - {"punl"}          # punl itself: its __version__
    unknown = imported - set(ORDER)
    assert not unknown, f"{name} imports {sorted(unknown)}, which is no module of the order"
    bad = {m for m in imported if ORDER.index(m) >= ORDER.index(name)}
    assert not bad, f"{name} imports {sorted(bad)}, which come at or after it"


def test_the_order_check_catches_a_circle(tmp_path, monkeypatch):
    fake = tmp_path / "punl"
    (fake / "core").mkdir(parents=True)
    (fake / "study").mkdir()
    (fake / "study" / "unlearn.py").write_text("")
    path = fake / "core" / "config.py"
    path.write_text("def f():\n    from ..study.unlearn import METHODS\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert punl_imports(path) == {"punl.study.unlearn"}
    with pytest.raises(AssertionError, match="come at or after it"):
        test_a_module_imports_only_upstream_ones(path)


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
    assert stage in (*STAGES, ANALYSIS, RUNTIME)
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
    ANALYSIS: {None: []},
    RUNTIME: {None: []},
}


def test_stage_fields_partition_the_configuration():
    declared = [n for s in (*STAGES, ANALYSIS, RUNTIME) for n in stage_fields(s)]
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


def test_the_suites_groups_keep_shared_fixtures_in_one_worker():
    """Under pytest-xdist each group runs in one worker (``tests/conftest.py``): every test file
    that asks for the session's tiny book (``tiny_run``, ``tiny_html``) is in the tiny-book
    group, so the book is made once, and every group named to go first exists."""
    import re
    from conftest import LONGEST_FIRST, TINY_BOOK_FILES, group_of
    tests = Path(__file__).resolve().parent
    users = {p.name for p in tests.glob("test_*.py")
             if re.search(r"def \w+\([^)]*\btiny_(run|html)\b", p.read_text())}
    assert users and users <= TINY_BOOK_FILES, users - TINY_BOOK_FILES
    groups = {group_of(f"tests/{p.name}::t") for p in tests.glob("test_*.py")}
    assert set(LONGEST_FIRST) <= groups, set(LONGEST_FIRST) - groups
    assert group_of("tests/test_book.py::t[a/b]") == group_of("tests/test_browser.py::t")
