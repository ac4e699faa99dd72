"""The accountant for your own model: per-example norms against a plain per-example loop of
autograd, per-point RDP against dp_accounting's own RDP accountant, the noisy step against a
loop, and one clear error for each bad input."""
import numpy as np
import pytest
import torch
from dp_accounting import dp_event
from dp_accounting.rdp import RdpAccountant
from torch import nn

import punl
from punl.engine.accountant import PrivacyAccountant


def regression(seed: int = 0):
    """A small regression model and data: a loss that is not cross-entropy."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.LayerNorm(8), nn.Linear(8, 1))
    x, y = torch.randn(40, 5), torch.randn(40, 1)
    return model, x, y


def loop_grads(model, loss_fn, x, y) -> list[torch.Tensor]:
    """Each example's gradient, flattened, by one autograd call per example."""
    out = []
    for xi, yi in zip(x, y):
        model.zero_grad()
        loss_fn(model(xi[None]), yi[None]).backward()
        out.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    return out


def accountant(model, **kw):
    settings = dict(n=40, sample_rate=0.25, noise_multiplier=1.2, clip=0.5, chunk_size=16)
    return PrivacyAccountant(model, nn.MSELoss(), **{**settings, **kw})


def test_norms_of_any_loss_match_a_per_example_loop():
    model, x, y = regression()
    found = accountant(model).norms(x, y)
    expected = torch.stack([g.norm() for g in loop_grads(model, nn.MSELoss(), x, y)])
    # float32 sums of ~100 terms in a different order: a few ulps relative on any BLAS
    torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-7)


def test_rdp_of_points_at_the_clip_is_the_sampled_gaussians_from_dp_accounting():
    """A point whose norm is at or above C at every record gets exactly the textbook DP-SGD
    guarantee: dp_accounting's RdpAccountant composed over the same steps."""
    model, x, y = regression()
    acct = accountant(model, clip=1e-4)           # every norm above C: every point at the clip
    acct.record(x, y, steps=30)
    acct.record(x, y, steps=20)
    library = RdpAccountant(list(acct.orders))
    library.compose(dp_event.PoissonSampledDpEvent(
        0.25, dp_event.GaussianDpEvent(1.2)), 50)
    eps_library = library.get_epsilon(1e-5)
    # the accountant's per-order tables are within 1.1e-5 relative of the library (privacy.py)
    np.testing.assert_allclose(acct.epsilon(1e-5), eps_library, rtol=1e-4)
    assert acct.steps_recorded == 50


def test_smaller_norms_give_less_privacy_loss():
    model, x, y = regression()
    acct = accountant(model, clip=1e3, noise_multiplier=1e-3)
    norms = acct.record(x, y, steps=10)
    assert norms.max() < 1e3                      # no norm reaches C
    rdp = acct.rdp()
    order = np.argsort(norms)
    # RDP grows with the norm (the tables are monotone at their knots; 1e-9 covers rounding)
    assert (np.diff(rdp[order, 0]) >= -1e-9 * rdp[order[1:], 0]).all()
    assert rdp[order[-1], 0] > 10 * rdp[order[0], 0]
    at_clip = accountant(model, clip=1e-4, noise_multiplier=1e-3)
    at_clip.record(x, y, steps=10)
    assert (rdp[:, 0] < at_clip.rdp()[:, 0]).all()


def test_the_noisy_step_without_noise_is_the_clipped_mean_of_a_loop():
    model, x, y = regression()
    acct = accountant(model, noise_multiplier=1e-30)
    before = [p.detach().clone() for p in model.parameters()]
    expected = sum(g * min(1.0, 0.5 / float(g.norm()))
                   for g in loop_grads(model, nn.MSELoss(), x[:10], y[:10])) / (0.25 * 40)
    acct.noisy_step(torch.optim.SGD(model.parameters(), lr=1.0), x[:10], y[:10])
    moved = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, model.parameters())])
    torch.testing.assert_close(moved, expected, rtol=1e-4, atol=1e-6)


def test_the_noise_has_the_stated_scale():
    model, x, y = regression()
    acct = accountant(model, noise_multiplier=1000.0, clip=0.5)
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    acct.noisy_step(torch.optim.SGD(model.parameters(), lr=1.0), x[:4], y[:4],
                    generator=torch.Generator().manual_seed(0))
    moved = before - torch.cat([p.detach().flatten() for p in model.parameters()])
    expected_sd = 1000.0 * 0.5 / (0.25 * 40)      # sigma C / (q N); the gradients add < 0.1%
    sd = float(moved.std())
    # 73 parameters: 25% is about three standard errors of the sample sd
    assert 0.75 * expected_sd < sd < 1.25 * expected_sd


@pytest.mark.parametrize("kw,name", [
    (dict(sample_rate=0.0), "sample_rate"), (dict(sample_rate=1.5), "sample_rate"),
    (dict(noise_multiplier=float("nan")), "noise_multiplier"), (dict(clip=-1.0), "clip"),
    (dict(n=0), "n"), (dict(n=2.5), "n"), (dict(orders=[1.0, 2.0]), "orders"),
    (dict(chunk_size=0), "chunk_size")])
def test_bad_settings_are_refused_by_name(kw, name):
    model, _, _ = regression()
    with pytest.raises(ValueError, match=f"^{name}:"):
        accountant(model, **kw)


def test_batchnorm_and_bad_records_are_refused_by_name():
    with pytest.raises(ValueError, match="^model: BatchNorm"):
        accountant(nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8)))
    model, x, y = regression()
    acct = accountant(model)
    with pytest.raises(ValueError, match="^record: nothing recorded"):
        acct.rdp()
    with pytest.raises(ValueError, match="^x: the accountant covers n = 40"):
        acct.record(x[:10], y[:10])
    with pytest.raises(ValueError, match="^steps:"):
        acct.record(x, y, steps=0)


def test_the_package_exports_the_accounting():
    assert punl.PrivacyAccountant is PrivacyAccountant
    from punl.engine import privacy
    assert punl.per_instance_rdp is privacy.per_instance_rdp
    assert punl.per_instance_epsilon is privacy.per_instance_epsilon
