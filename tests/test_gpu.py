"""Per-example norms and clipped sums on a GPU against a plain per-example loop on the same
device (skipped without one): one model, and stacked models with every layer's rule applied in
a backward hook, which CUDA runs on autograd's device thread. The engine's checks on a GPU
(stacked models equal models alone, snapshots resume bit for bit) are the ``cuda`` cases of
``tests/test_sgd.py``."""
import pytest
import torch
import torch.nn.functional as F

from punl.engine import pergrad
from punl.engine.pergrad import clipped, conv2d, stacked
from punl.engine.models import build_model
from punl.engine.pergrad import clipped_gradient_sums, detached_params, per_example_grad_norms
from punl.engine.sgd import stack

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")
SHAPES = {"mlp": (1, 6, 6), "cnn": (3, 8, 8), "resnet": (3, 8, 8)}


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
@pytest.mark.parametrize("layout", sorted(pergrad.CONV_STACK_LAYOUTS))
def test_stacked_rules_in_backward_hooks_match_a_loop_on_cuda(name, layout, monkeypatch):
    """Three stacked models, every layer's rule applied in a backward hook (which CUDA runs on
    autograd's device thread, not the caller's), with each stacked layout of the convolutions,
    against the loop on each model."""
    monkeypatch.setattr(stacked, "STREAM_MIN_ELEMENTS", 0)
    monkeypatch.setattr(conv2d, "conv2d_stack_layout", lambda *args, **kwargs: layout)
    monkeypatch.setattr(clipped, "stacking_pays", lambda *args: True)
    monkeypatch.setattr(clipped, "_clipped_sums_by_vmap", None)  # the layer path must serve
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
