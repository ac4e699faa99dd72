import pytest
import torch

from bookutil import build_tiny_book, make_book_root, run_tiny

torch.set_num_threads(2)


@pytest.fixture
def tiny_config():
    """A configuration small enough to train in a second or two."""
    from punl.core.config import Config
    return Config(name="tiny", dataset="digits", n_train=300, model="mlp", width=16, runs=2,
                  epochs=5, batch_size=32, lr=0.1, sigma=1.0, clip=10.0, record_every=5,
                  label_noise=0.1, group_size=10, n_groups=3, unlearn_steps=20, n_checkpoints=4,
                  retrain_seeds=2, n_bootstrap=50, barrier_points=5)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A fresh book root with the tiny configuration executed into it once.

    A dict: ``root``, ``first`` (the run record) and ``kw`` (the run's keyword arguments)."""
    root = make_book_root(tmp_path_factory.mktemp("book"))
    first, kw = run_tiny(root)
    return {"root": root, "first": first, "kw": kw}


@pytest.fixture(scope="session")
def tiny_html(tiny_run):
    """The tiny book built with warnings as errors: its ``_build/html`` folder."""
    return build_tiny_book(tiny_run["root"])


# Files whose tests share the session's tiny book: one group, so the book is made once.
TINY_BOOK_FILES = {"test_book.py", "test_browser.py", "test_terminal.py"}
# The longest groups, longest first (measured with ``--durations``): they start first, so that no
# long group starts last while the other worker idles.
LONGEST_FIRST = ["test_readme.py", "tiny-book", "test_faults.py", "test_wheel.py",
                 "test_sweep.py", "test_analysis.py", "test_predict_run.py", "test_mia.py"]


def group_of(nodeid: str) -> str:
    """The group a test runs in under pytest-xdist: its file's name, or ``tiny-book``."""
    name = nodeid.split("::")[0].rsplit("/", 1)[-1]
    return "tiny-book" if name in TINY_BOOK_FILES else name


def pytest_collection_modifyitems(config, items):
    """In a pytest-xdist worker, the longest groups first (file order within each group): the
    order the groups are handed out in. A run in one process keeps the files' order."""
    if hasattr(config, "workerinput"):
        rank = {group: i for i, group in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(rank)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under ``pytest -n N`` (``make`` runs ``-n 2``), each group's tests go to one worker, so
    that a module's fixtures (a tiny run, a built wheel) and the session's tiny book are made
    once; groups are handed out in collection order (longest first), each to the first free
    worker."""
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    config.option.loadscopereorder = False
    return GroupScheduling(config, log)
