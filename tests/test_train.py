"""Noisy-SGD training and the ledger."""
import numpy as np
import pytest

from punl.engine.ledger import LedgerError, record_steps
from punl.stages.pipeline import load_data
from punl.engine.train import train


def test_record_steps_cover_all_steps():
    steps, per = record_steps(23, 5)
    assert steps.tolist() == [0, 5, 10, 15, 20] and per.tolist() == [5, 5, 5, 5, 3]
    assert per.sum() == 23


def test_same_config_gives_bit_identical_ledger(tiny_config):
    data = load_data(tiny_config)
    _, a = train(tiny_config, data, progress=False)
    _, b = train(tiny_config, data, progress=False)
    assert a.to_bytes() == b.to_bytes()
    _, c = train(tiny_config.replace(seed=1), data, progress=False)
    assert not np.array_equal(a.grad_norm, c.grad_norm)


def test_ledger_format_and_contents(tiny_config):
    data = load_data(tiny_config)
    runs, ledger = train(tiny_config, data, progress=False)
    n, r = data.n_train, tiny_config.runs
    T = ledger.total_steps
    assert T == ledger.batch_sizes.shape[1] == int(np.ceil(5 * 300 / 32))
    k = len(ledger.record_steps)
    assert (ledger.runs, ledger.records, ledger.n_points) == (r, k, n)
    for name in ("clipped_norm", "grad_norm", "loss", "prob", "el2n"):
        assert getattr(ledger, name).shape == (r, k, n)
        assert getattr(ledger, name).dtype == np.float32
    assert np.all(ledger.clipped_norm <= tiny_config.clip + 1e-5)
    assert np.allclose(ledger.clipped_norm, np.minimum(ledger.grad_norm, tiny_config.clip))
    assert np.allclose(np.exp(-ledger.loss), ledger.prob, rtol=1e-4)
    # training reduces the loss and learns: final test accuracy far above chance (0.1)
    assert ledger.loss[:, -1].mean() < ledger.loss[:, 0].mean()
    assert ledger.test_acc[:, -1].min() > 0.5
    # runs differ (independent seeds) but the record at step 0 of run r is at its own init
    assert not np.array_equal(ledger.grad_norm[0], ledger.grad_norm[1])


def test_ledger_round_trips_and_rejects_inconsistent_arrays(tiny_config, tmp_path):
    import dataclasses
    _, ledger = train(tiny_config.replace(runs=1, epochs=1), load_data(tiny_config),
                      progress=False)
    path = tmp_path / "ledger.npz"
    path.write_bytes(ledger.to_bytes())
    again = type(ledger).load(path)
    for f in dataclasses.fields(ledger):
        assert np.array_equal(getattr(again, f.name), getattr(ledger, f.name)), f.name
    with pytest.raises(LedgerError, match="^loss:"):
        dataclasses.replace(ledger, loss=ledger.loss[:, :-1])
    with pytest.raises(LedgerError, match="^batch_sizes:"):
        dataclasses.replace(ledger, batch_sizes=ledger.batch_sizes[:, 1:])
    with pytest.raises(LedgerError, match="^train_acc:"):
        dataclasses.replace(ledger, train_acc=ledger.train_acc.astype(np.float64))
    with pytest.raises(LedgerError, match="missing"):
        type(ledger).from_arrays({"grad_norm": ledger.grad_norm})
