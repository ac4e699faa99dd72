"""The engine on a GPU: the same checks as on the CPU, run on ``cuda`` (skipped without one).

The batch frames take the padded-capacity path on a GPU (no data-dependent shapes), so these
tests are the ones that exercise it: stacked models equal models run alone, snapshots resume bit
for bit, per-example norms and clipped sums equal a plain per-example loop."""
import pytest
import torch
import torch.nn.functional as F

from punl import pergrad
from punl.methods import UpdateRule
from punl.models import build_model
from punl.pergrad import clipped_gradient_sums, detached_params, per_example_grad_norms
from punl.sgd import Population, run_members, stack
from test_sgd import _members

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")
SHAPES = {"mlp": (1, 6, 6), "cnn": (3, 8, 8), "resnet": (3, 8, 8)}


def _setup(name):
    return _members(name, device=CUDA)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_stacked_models_equal_models_alone_on_cuda(name):
    model, x, y, members = _setup(name)
    rule = UpdateRule(lr=0.05, sigma=0.5, clip=1.0, expected_batch=8, weight_decay=0.001)
    together = run_members(model, members, x, y, rule, [0, 3, 7])
    for s, member in enumerate(members):
        alone = run_members(model, [member], x, y, rule, [0, 3, 7])[0]
        for a, b in zip(together[s], alone):
            for k in a:
                assert a[k].device.type == "cuda"
                torch.testing.assert_close(a[k], b[k], rtol=1e-9, atol=1e-11)
    first = next(iter(members[0].start))
    assert not torch.equal(together[0][2][first].cpu(), members[0].start[first])


def test_snapshot_resumes_bit_for_bit_on_cuda():
    model, x, y, members = _setup("mlp")
    rule = UpdateRule(lr=0.05, sigma=0.5, clip=1.0, expected_batch=8)
    straight = Population(model, members, x, y, rule)
    straight.advance(48)
    first = Population(model, members, x, y, rule)
    first.advance(32)
    resumed = Population(model, members, x, y, rule)
    resumed.restore(first.state())
    resumed.advance(16)
    for k in straight.params:
        assert torch.equal(straight.params[k], resumed.params[k])


def _loop(model, x, y, clip):
    """Per-example norms and sum_i min(1, C/||g_i||) g_i by a plain loop on the same device."""
    norms, summed = [], {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        g = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
        norm = torch.sqrt(sum(v.pow(2).sum() for v in g.values()))
        norms.append(norm)
        for k in summed:
            summed[k] += torch.clamp(clip / norm, max=1.0) * g[k]
    return torch.stack(norms), summed


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_norms_and_clipped_sums_match_a_loop_on_cuda(name):
    torch.manual_seed(1)
    model = build_model(name, SHAPES[name], 5, width=8).double().to(CUDA)
    x = torch.randn(9, *SHAPES[name], dtype=torch.float64, device=CUDA)
    y = torch.randint(0, 5, (9,), device=CUDA)
    ref_norms, ref_sums = _loop(model, x, y, clip=0.5)
    torch.testing.assert_close(per_example_grad_norms(model, x, y), ref_norms, rtol=1e-6, atol=0)
    params = stack([detached_params(model)])
    out = clipped_gradient_sums(model, params, x[None], y[None], torch.ones(1, 9, device=CUDA),
                                0.5)
    torch.testing.assert_close(out.norms[0], ref_norms, rtol=1e-6, atol=0)
    for k, v in ref_sums.items():
        torch.testing.assert_close(out.summed[k][0], v, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_stacked_rules_in_backward_hooks_match_a_loop_on_cuda(name, monkeypatch):
    """Three stacked models, every layer's rule applied in a backward hook (which CUDA runs on
    autograd's device thread, not the caller's), against the loop on each model."""
    monkeypatch.setattr(pergrad, "STREAM_MIN_ELEMENTS", 0)
    monkeypatch.setattr(pergrad, "_stacking_pays", lambda *args: True)
    monkeypatch.setattr(pergrad, "_clipped_sums_by_vmap", None)  # the layer path must serve
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(build_model(name, SHAPES[name], 5, width=8).double().to(CUDA))
    x = torch.randn(3, 9, *SHAPES[name], dtype=torch.float64, device=CUDA)
    y = torch.randint(0, 5, (3, 9), device=CUDA)
    params = stack([detached_params(m) for m in models])
    out = clipped_gradient_sums(models[0], params, x, y, torch.ones(3, 9, device=CUDA), 0.5)
    for s, model in enumerate(models):
        ref_norms, ref_sums = _loop(model, x[s], y[s], clip=0.5)
        torch.testing.assert_close(out.norms[s], ref_norms, rtol=1e-6, atol=0)
        for k, v in ref_sums.items():
            torch.testing.assert_close(out.summed[k][s], v, rtol=1e-6, atol=1e-10)
