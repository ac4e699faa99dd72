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
