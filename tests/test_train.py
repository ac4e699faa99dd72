"""Noisy-SGD training and the ledger."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from punl.ledger import LedgerError, record_steps
from punl.methods import UpdateRule
from punl.pergrad import detached_params
from punl.pipeline import load_data
from punl.sgd import draw_noise, noisy_sgd_update, poisson_batch
from punl.train import train


def test_one_step_matches_hand_computation():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    params = detached_params(model)
    x = torch.randn(4, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0])
    noise = {k: torch.randn_like(p) for k, p in params.items()}
    rule = UpdateRule(lr=0.3, sigma=0.7, clip=0.5, expected_batch=5, weight_decay=0.01)
    new, n_clipped = noisy_sgd_update(model, params, x, y, noise, rule)
    # by hand: per-example gradients from a loop, clipped, summed, noised, averaged by B
    summed = {k: torch.zeros_like(p) for k, p in params.items()}
    clipped = 0
    for i in range(4):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        g = {k: p.grad for k, p in model.named_parameters()}
        norm = torch.sqrt(sum(v.pow(2).sum() for v in g.values()))
        scale = min(1.0, 0.5 / float(norm))
        clipped += norm > 0.5
        for k in summed:
            summed[k] += scale * g[k]
    for k, p in params.items():
        expected = p - 0.3 * ((summed[k] + 0.7 * 0.5 * noise[k]) / 5 + 0.01 * p)
        torch.testing.assert_close(new[k], expected, rtol=1e-10, atol=1e-12)
    assert n_clipped == clipped


def test_unclipped_step_is_plain_noisy_sgd():
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 2).double()
    params = detached_params(model)
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randint(0, 2, (6,))
    zero = {k: torch.zeros_like(p) for k, p in params.items()}
    rule = UpdateRule(lr=0.1, sigma=0.0, clip=1e-3, expected_batch=6, clip_per_example=False)
    new, _ = noisy_sgd_update(model, params, x, y, zero, rule)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()  # mean over 6 == sum / B
    for k, p in model.named_parameters():
        torch.testing.assert_close(new[k], p.detach() - 0.1 * p.grad, rtol=1e-10, atol=1e-12)


def test_poisson_batch_sizes_average_b():
    gen = torch.Generator().manual_seed(0)
    sizes = [len(poisson_batch(1000, 0.05, gen)) for _ in range(2000)]
    # mean of 2000 Binomial(1000, 0.05) draws: sd of the mean = sqrt(47.5 / 2000) ~ 0.15
    assert abs(np.mean(sizes) - 50) < 0.6
    assert np.var(sizes) == pytest.approx(1000 * 0.05 * 0.95, rel=0.15)


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


def test_noise_seed_stream_is_reproducible():
    params = {"w": torch.zeros(3, 2)}
    a = draw_noise(params, torch.Generator().manual_seed(5))["w"]
    b = draw_noise(params, torch.Generator().manual_seed(5))["w"]
    assert torch.equal(a, b)
