"""Helpers shared by the tests that execute notebooks and build the book."""
import shutil
from pathlib import Path

from punl.publish.book import build_book, generate_toc
from punl.commands.runner import run_config

REPO = Path(__file__).resolve().parent.parent
#: HTML, script and backticks in a user's value: the tiny run sets data_root (which digits never
#: reads) to it, so that every tiny book shows whether a user's markup reaches a page live.
MARKUP = "a <img src=x onerror=alert(1)> `b` ``c`` <script>alert(2)</script> & d"
TINY = ["n_train=200", "runs=2", "epochs=2", "record_every=5", "width=16", "group_size=8",
        "n_groups=2", "baseline_scores=[avg_grad_norm]", "unlearn_steps=8",
        "n_checkpoints=3", "retrain_seeds=4", "n_bootstrap=20", "n_permutations=50",
        "law_simulations=20", "barrier_points=5", "heldout_requests=1", "point_models=48",
        "forget_probability=0.25", "name=tiny", f"data_root={MARKUP}"]


def tiny_without(*fields: str) -> list[str]:
    """TINY less the overrides of ``fields``, for a test that sets them itself."""
    return [o for o in TINY if o.split("=", 1)[0] not in fields]


#: The tiny overrides for a shipped configuration run as a user would: without the name (each
#: command keeps its run name) or the markup in data_root, and with two ledger records an epoch
#: whatever the configuration's own interval (a tiny run of a few steps would otherwise record
#: step 0 alone, which the preflight refuses).
TINY_SETTINGS = tiny_without("name", "record_every", "data_root") + [
    "record_every=null", "records_per_epoch=2"]


NOTEBOOKS = tuple(sorted(p.name for p in (REPO / "notebooks").glob("0*.ipynb")))
CHAPTERS = ("intro.md", "methods.md", "reproduce.md")


def make_book_root(root: Path) -> Path:
    """A book root holding the repository's _config.yml, its local extensions and prose chapters."""
    (root / "book").mkdir(parents=True)
    shutil.copy(REPO / "_config.yml", root / "_config.yml")
    shutil.copytree(REPO / "_ext", root / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "_static", root / "_static")
    for name in CHAPTERS:
        shutil.copy(REPO / "book" / name, root / "book" / name)
    return root


def make_notebooks_dir(folder: Path, names=NOTEBOOKS) -> Path:
    """A copy of the notebook templates ``names`` (all of them by default)."""
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy(REPO / "notebooks" / name, folder / name)
    return folder


def tiny_run_kwargs(root: Path) -> dict:
    """The keyword arguments of :func:`run_config` that keep a tiny run inside ``root``."""
    return dict(out_dir=root / "runs" / "tiny", book_dir=root / "book" / "runs", progress=False,
                notebooks_dir=make_notebooks_dir(root / "templates"))


def run_tiny(root: Path) -> tuple[dict, dict]:
    """Execute the tiny configuration into the book root ``root``, forecasting its stages first
    (``punl run --plan``): (run record, its kwargs)."""
    kw = tiny_run_kwargs(root)
    return run_config("digits-quick", TINY, on_forecast=lambda forecast: None, **kw), kw


def build_tiny_book(root: Path) -> Path:
    """Write ``_toc.yml`` and build ``root``'s book; the HTML folder."""
    generate_toc(root)
    return build_book(root)
