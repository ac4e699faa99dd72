"""Per-example gradients and norms against a plain per-example loop (the independent oracle)."""
import pytest
import torch
import torch.nn.functional as F

from punl.models import MODELS, build_model
from punl.pergrad import per_example_grad_norms, per_example_grads, supports_layer_norms

SHAPES = {"logreg": (1, 8, 8), "mlp": (1, 8, 8), "cnn": (3, 12, 12), "resnet": (3, 12, 12)}


def _model_and_batch(name, n=7, seed=0):
    torch.manual_seed(seed)
    model = build_model(name, SHAPES[name], 5, width=8).double()
    x = torch.randn(n, *SHAPES[name], dtype=torch.float64)
    y = torch.randint(0, 5, (n,))
    return model, x, y


def _loop_grads(model, x, y):
    out = []
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        out.append({k: p.grad.detach().clone() for k, p in model.named_parameters()})
    return out


@pytest.mark.parametrize("name", MODELS)
def test_per_example_grads_match_loop(name):
    model, x, y = _model_and_batch(name)
    grads = per_example_grads(model, x, y)
    for i, ref in enumerate(_loop_grads(model, x, y)):
        for k, g in ref.items():
            torch.testing.assert_close(grads[k][i], g, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", ["vmap", "layers", "auto"])
def test_norms_match_loop(name, method):
    model, x, y = _model_and_batch(name)
    ref = torch.stack([torch.sqrt(sum(g.pow(2).sum() for g in r.values()))
                       for r in _loop_grads(model, x, y)])
    got = per_example_grad_norms(model, x, y, method=method)
    assert got.shape == (len(x),)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_chunked_equals_unchunked(name):
    model, x, y = _model_and_batch(name, n=11)
    full = per_example_grad_norms(model, x, y)
    for chunk in (1, 3, 4):
        torch.testing.assert_close(per_example_grad_norms(model, x, y, chunk_size=chunk), full,
                                   rtol=1e-10, atol=0)
    grads_full = per_example_grads(model, x, y)
    grads_chunked = per_example_grads(model, x, y, chunk_size=4)
    for k in grads_full:
        torch.testing.assert_close(grads_chunked[k], grads_full[k], rtol=1e-10, atol=0)


def test_every_model_family_has_layer_rules():
    for name in MODELS:
        assert supports_layer_norms(_model_and_batch(name)[0]), name


def test_layer_path_handles_strided_and_unpadded_convolutions():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, stride=2), torch.nn.Tanh(),
                                torch.nn.Conv2d(3, 4, (2, 3), padding=(1, 0)), torch.nn.Flatten(),
                                torch.nn.LazyLinear(5)).double()
    x = torch.randn(5, 2, 11, 9, dtype=torch.float64)
    model(x)  # materialise the lazy layer
    y = torch.randint(0, 5, (5,))
    torch.testing.assert_close(per_example_grad_norms(model, x, y, method="layers"),
                               per_example_grad_norms(model, x, y, method="vmap"), rtol=1e-8, atol=0)


def test_bad_chunk_size_is_named():
    model, x, y = _model_and_batch("mlp")
    with pytest.raises(ValueError, match="chunk_size"):
        per_example_grad_norms(model, x, y, chunk_size=0)
