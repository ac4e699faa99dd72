"""Per-example gradients and norms against a plain per-example loop (the independent oracle)."""
import threading

import pytest
import torch
import torch.nn.functional as F

from punl.engine import pergrad
from punl.engine.pergrad import clipped, conv2d, stacked
from punl.engine.models import MODELS, build_model
from punl.engine.pergrad import (CONV_WEIGHT_RULES, clipped_gradient_sums, per_example_grad_norms,
                          per_example_grads, supports_layer_norms)

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
    # float64; a chunk of 4 and the whole batch may take different convolution kernels, which
    # sum in different orders: entries agree to rounding, ~1e-16 of the gradient's scale per
    # operation (an entry that is 0 in exact arithmetic, as every entry of a parameter whose
    # gradient cancels, comes out as 0 in one order and 3e-17 in another), so the absolute
    # tolerance is a tiny fraction of the largest entry of any parameter's gradient
    scale = max(float(g.abs().max()) for g in grads_full.values())
    for k in grads_full:
        torch.testing.assert_close(grads_chunked[k], grads_full[k], rtol=1e-10,
                                   atol=1e-12 * scale)


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


# ---------------------------------------------------------------- clipped gradient sums

def _stacked_models_and_batch(name, models, n=6, seed=0):
    """``models`` models of one architecture (seeds seed..), their stacked parameters, a batch
    [S, n, ...] per model with the last example of every model absent (weight 0)."""
    nets = [_model_and_batch(name, n, seed + s)[0] for s in range(models)]
    gen = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(models, n, *SHAPES[name], generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (models, n), generator=gen)
    weights = torch.ones(models, n, dtype=torch.float64)
    weights[:, -1] = 0
    weights[0, 1] = 0.5
    params = {k: torch.stack([dict(m.named_parameters())[k].detach() for m in nets])
              for k, _ in nets[0].named_parameters()}
    return nets, params, x, y, weights


def _loop_clipped_sums(nets, x, y, weights, clip):
    """The oracle: per model, per example, ``loss.backward()``, then the clipped weighted sum."""
    norms, summed, counts = [], {}, []
    for s, net in enumerate(nets):
        grads = _loop_grads(net, x[s], y[s])
        norm = torch.stack([torch.sqrt(sum(g.pow(2).sum() for g in r.values())) for r in grads])
        factor = torch.ones_like(norm) if clip is None else (clip / norm).clamp(max=1)
        for k in grads[0]:
            summed.setdefault(k, []).append(
                sum(weights[s, j] * factor[j] * grads[j][k] for j in range(len(grads))))
        norms.append(norm)
        counts.append(0 if clip is None else int(((norm > clip) & (weights[s] > 0)).sum()))
    return torch.stack(norms), {k: torch.stack(v) for k, v in summed.items()}, torch.tensor(counts)


def _binding_clip(nets, x, y, weights):
    """A clip halfway between two middle norms of the real members: it binds for some members
    and not others, and no norm is within rounding of it."""
    norms = _loop_clipped_sums(nets, x, y, weights, None)[0][weights > 0].sort().values
    middle = len(norms) // 2
    return float(norms[middle - 1:middle + 1].mean())


def _assert_sums_equal(got, norms, summed, counts, weights, rtol=1e-6):
    real = weights > 0
    torch.testing.assert_close(got.norms[real], norms[real], rtol=rtol, atol=1e-12)
    assert got.summed.keys() == summed.keys()
    for k in summed:
        torch.testing.assert_close(got.summed[k], summed[k], rtol=rtol, atol=1e-12)
    assert got.n_clipped.dtype == torch.long
    torch.testing.assert_close(got.n_clipped, counts)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("models", [1, 3])
@pytest.mark.parametrize("clipping", [True, False])
def test_clipped_gradient_sums_match_loop(name, models, clipping, monkeypatch):
    monkeypatch.setattr(clipped, "_clipped_sums_by_vmap", None)  # the layer path must serve
    monkeypatch.setattr(clipped, "stacking_pays", lambda *args: True)  # one pass for all
    nets, params, x, y, weights = _stacked_models_and_batch(name, models)
    clip = _binding_clip(nets, x, y, weights) if clipping else None
    norms, summed, counts = _loop_clipped_sums(nets, x, y, weights, clip)
    if clipping:
        assert 0 < counts.sum() < int((weights > 0).sum())
    got = clipped_gradient_sums(nets[0], params, x, y, weights, clip)
    _assert_sums_equal(got, norms, summed, counts, weights)


def _hooks_on_another_thread(monkeypatch):
    """Run every tensor hook on a fresh thread, as autograd's engine does on CUDA (one worker
    thread per device), where the caller's thread-local state is not seen."""
    register = torch.Tensor.register_hook

    def on_thread(fn):
        def run(grad):
            result = {}

            def work():
                try:
                    result["value"] = fn(grad)
                except BaseException as err:  # re-raised on the caller's thread
                    result["error"] = err

            worker = threading.Thread(target=work)
            worker.start()
            worker.join()
            if "error" in result:
                raise result["error"]
            return result["value"]
        return run

    monkeypatch.setattr(torch.Tensor, "register_hook",
                        lambda self, fn: register(self, on_thread(fn)))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("hook_thread", ["caller", "other"])
def test_rules_applied_during_the_backward_pass_match_loop(name, hook_thread, monkeypatch):
    monkeypatch.setattr(stacked, "STREAM_MIN_ELEMENTS", 0)  # every output through a hook
    if hook_thread == "other":
        _hooks_on_another_thread(monkeypatch)
    monkeypatch.setattr(clipped, "_clipped_sums_by_vmap", None)  # the layer path must serve
    monkeypatch.setattr(clipped, "stacking_pays", lambda *args: True)
    nets, params, x, y, weights = _stacked_models_and_batch(name, 2)
    clip = _binding_clip(nets, x, y, weights)
    got = clipped_gradient_sums(nets[0], params, x, y, weights, clip)
    _assert_sums_equal(got, *_loop_clipped_sums(nets, x, y, weights, clip), weights)
    torch.testing.assert_close(per_example_grad_norms(nets[1], x[1], y[1], method="layers"),
                               per_example_grad_norms(nets[1], x[1], y[1], method="vmap"),
                               rtol=1e-8, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_clipped_gradient_sums_do_not_depend_on_stacked_models(name, monkeypatch):
    monkeypatch.setattr(clipped, "stacking_pays", lambda *args: True)
    nets, params, x, y, weights = _stacked_models_and_batch(name, 3)
    clip = _binding_clip(nets, x, y, weights)
    stacked = clipped_gradient_sums(nets[0], params, x, y, weights, clip)
    for s in range(3):
        one = clipped_gradient_sums(nets[0], {k: v[s:s + 1] for k, v in params.items()},
                                    x[s:s + 1], y[s:s + 1], weights[s:s + 1], clip)
        torch.testing.assert_close(stacked.norms[s], one.norms[0], rtol=1e-10, atol=0)
        torch.testing.assert_close(stacked.n_clipped[s], one.n_clipped[0])
        for k in params:
            torch.testing.assert_close(stacked.summed[k][s], one.summed[k][0], rtol=1e-10,
                                       atol=1e-14)


def test_clipped_gradient_sums_one_pass_per_model(monkeypatch):
    monkeypatch.setattr(clipped, "stacking_pays", lambda *args: False)
    nets, params, x, y, weights = _stacked_models_and_batch("cnn", 3)
    clip = _binding_clip(nets, x, y, weights)
    got = clipped_gradient_sums(nets[0], params, x, y, weights, clip)
    _assert_sums_equal(got, *_loop_clipped_sums(nets, x, y, weights, clip), weights)


def test_stacking_choice_is_timed_once_and_cached():
    nets, params, x, y, weights = _stacked_models_and_batch("cnn", 2)
    twin = stacked.twin_of(nets[0])
    twin.stacking.clear()
    choice = clipped.stacking_measured_faster(nets[0], twin, params, x, y, weights, 1.0)
    assert isinstance(choice, bool) and list(twin.stacking.values()) == [choice]


@pytest.mark.parametrize("rule", sorted(CONV_WEIGHT_RULES))
@pytest.mark.parametrize("layout", sorted(pergrad.CONV_STACK_LAYOUTS))
@pytest.mark.parametrize("models", [1, 2])
@pytest.mark.parametrize("rules_run", ["after the pass", "in hooks on another thread"])
def test_clipped_gradient_sums_with_every_conv_rule_and_layout(rule, layout, models, rules_run,
                                                               monkeypatch):
    if rules_run != "after the pass":
        monkeypatch.setattr(stacked, "STREAM_MIN_ELEMENTS", 0)
        _hooks_on_another_thread(monkeypatch)
    monkeypatch.setattr(conv2d, "conv2d_weight_rule", lambda *args, **kwargs: rule)
    monkeypatch.setattr(conv2d, "conv2d_stack_layout", lambda *args, **kwargs: layout)
    monkeypatch.setattr(clipped, "stacking_pays", lambda *args: True)
    nets, params, x, y, weights = _stacked_models_and_batch("resnet", models)
    clip = _binding_clip(nets, x, y, weights)
    got = clipped_gradient_sums(nets[0], params, x, y, weights, clip)
    _assert_sums_equal(got, *_loop_clipped_sums(nets, x, y, weights, clip), weights)


def test_clipped_gradient_sums_fall_back_for_layers_without_rules():
    torch.manual_seed(3)
    nets = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8),
                                torch.nn.LayerNorm(8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 5)).double() for _ in range(2)]
    assert not supports_layer_norms(nets[0])
    params = {k: torch.stack([dict(m.named_parameters())[k].detach() for m in nets])
              for k, _ in nets[0].named_parameters()}
    x = torch.randn(2, 5, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 5, (2, 5))
    weights = torch.tensor([[1, 1, 1, 1, 0], [1, 0, 1, 1, 1]], dtype=torch.float64)
    clip = _binding_clip(nets, x, y, weights)
    got = clipped_gradient_sums(nets[0], params, x, y, weights, clip)
    _assert_sums_equal(got, *_loop_clipped_sums(nets, x, y, weights, clip), weights)


def test_clipped_gradient_sums_of_an_empty_batch_are_zero():
    nets, params, x, y, weights = _stacked_models_and_batch("cnn", 2)
    got = clipped_gradient_sums(nets[0], params, x[:, :0], y[:, :0], weights[:, :0], 1.0)
    assert got.norms.shape == (2, 0) and got.n_clipped.tolist() == [0, 0]
    for k, v in params.items():
        assert got.summed[k].shape == v.shape and not got.summed[k].any()


def test_clipped_gradient_sums_name_bad_shapes():
    nets, params, x, y, weights = _stacked_models_and_batch("mlp", 2)
    with pytest.raises(ValueError, match="weights"):
        clipped_gradient_sums(nets[0], params, x, y, weights[:, :-1], 1.0)


# ---------------------------------------------------------------- convolution rules

def _loop_conv_weight_sq(layer, a, b):
    """||d <out_i, b_i> / d weight||^2 and the same for the bias, one example at a time."""
    weight_sq, bias_sq = [], []
    for i in range(len(a)):
        layer.zero_grad()
        (layer(a[i:i + 1]) * b[i:i + 1]).sum().backward()
        weight_sq.append(layer.weight.grad.pow(2).sum())
        no_bias = torch.zeros((), dtype=a.dtype)
        bias_sq.append(layer.bias.grad.pow(2).sum() if layer.bias is not None else no_bias)
    return torch.stack(weight_sq), torch.stack(bias_sq)


CONV_CASES = [(c_in, k, stride, padding, bias) for c_in in (3, 8) for k in (1, 3)
              for stride in (1, 2) for padding in (0, 1) for bias in (True, False)]


@pytest.mark.parametrize("c_in,k,stride,padding,bias", CONV_CASES)
def test_every_conv_rule_matches_loop(c_in, k, stride, padding, bias):
    torch.manual_seed(c_in + 10 * k + 100 * stride + 1000 * padding)
    layer = torch.nn.Conv2d(c_in, 4, k, stride, padding, bias=bias).double()
    a = torch.randn(5, c_in, 7, 6, dtype=torch.float64)
    b = torch.randn_like(layer(a))
    weight_sq, bias_sq = _loop_conv_weight_sq(layer, a, b)
    for rule, fn in CONV_WEIGHT_RULES.items():
        torch.testing.assert_close(fn(layer, a, b), weight_sq, rtol=1e-8, atol=1e-12, msg=rule)
    chosen = pergrad.conv2d_weight_rule(layer, a, b)
    assert chosen in CONV_WEIGHT_RULES
    assert pergrad.conv2d_weight_rule(layer, a, b) == chosen  # measured once, then cached
    torch.testing.assert_close(pergrad.LAYER_TYPES[torch.nn.Conv2d].sq_norms(layer, a, b),
                               weight_sq + bias_sq, rtol=1e-8, atol=1e-12)


def test_a_failing_stacked_pass_falls_back_to_one_pass_per_model(monkeypatch):
    """Where the stacked pass is timed (off the CPU) and raises, the model is run one pass per
    model, with a warning, and the choice is cached."""
    model, x, y = _model_and_batch("cnn")
    params = {k: torch.stack([v, v]) for k, v in pergrad.detached_params(model).items()}
    xs, ys, w = torch.stack([x, x]), torch.stack([y, y]), torch.ones(2, len(x))

    def broken(*_):
        raise RuntimeError("The size of tensor a (392) must match the size of tensor b (3136)")

    monkeypatch.setattr(clipped, "_clipped_sums_stacked", broken)
    twin = stacked.twin_of(model)
    with pytest.warns(pergrad.StackingFallbackWarning, match="one pass per model"):
        assert not clipped.stacking_measured_faster(model, twin, params, xs, ys, w, 1.0)
    assert not clipped.stacking_measured_faster(model, twin, params, xs, ys, w, 1.0)


# ------------------------------------------------------------------- the layer-type registry
def test_every_registered_layer_type_has_a_norm_rule_and_a_stacked_twin():
    from punl.engine.pergrad.stacked import StackedLayer
    assert {torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm} <= set(pergrad.LAYER_TYPES)
    for module, record in pergrad.LAYER_TYPES.items():
        assert record.module is module and callable(record.norm_rule)
        assert issubclass(record.stacked, StackedLayer)
        for method in ("forward", "example_sq_norms", "summed"):
            assert getattr(record.stacked, method) is not getattr(StackedLayer, method, None)


class Scale(torch.nn.Module):
    """A layer no registry record covers: ``out = a * weight`` (one weight per feature)."""

    def __init__(self, features: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(0.5, 1.5, features))

    def forward(self, a):
        return a * self.weight


def scale_sq_norm(layer, a, b):
    """The weight gradient of example i is a_i * b_i (elementwise)."""
    return (a * b).pow(2).sum(1)


class StackedScale(pergrad.StackedLayer):
    """S scale layers on (model, example) rows."""

    def forward(self, a):
        w, models = self.weight(), self.tape.models
        out = (a.view(models, -1, a.shape[-1]) * w.unsqueeze(1)).view(a.shape)
        self.record(a, out)
        return out

    def example_sq_norms(self, rec, b, for_sums):
        sq = scale_sq_norm(self.spec, rec.a, b).view(rec.models, -1)
        return sq, ((rec.a * b) if for_sums else None)

    def summed(self, rec, coef, kept):
        per_example = kept.view(rec.models, coef.shape[1], -1)
        return self.named(torch.einsum("sid,si->sd", per_example, coef), None)


@pytest.fixture
def scale_registered():
    """Scale registered for one test, as a layer-type module would register it."""
    pergrad.layer_type(Scale, norm_rule=scale_sq_norm)(StackedScale)
    yield
    del pergrad.LAYER_TYPES[Scale]


def _scale_net():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), Scale(5), torch.nn.Tanh(),
                               torch.nn.Linear(5, 3)).double()


def test_a_layer_type_added_in_a_test_file_is_used(scale_registered, monkeypatch):
    """With Scale registered, a model holding it takes the per-layer path (the vmap path is
    disabled) and its norms and clipped sums equal those of a plain per-example loop."""
    model = _scale_net()
    assert supports_layer_norms(model)
    monkeypatch.setattr(clipped, "_clipped_sums_by_vmap", None)
    x, y = torch.randn(7, 6, dtype=torch.float64), torch.randint(0, 3, (7,))
    loop = _loop_grads(model, x, y)
    norms = per_example_grad_norms(model, x, y, method="layers")
    expected = torch.stack([torch.cat([g.flatten() for g in gs.values()]).norm() for gs in loop])
    torch.testing.assert_close(norms, expected)    # float64: default rtol 1e-7 holds on any BLAS
    params = {k: v.unsqueeze(0) for k, v in pergrad.detached_params(model).items()}
    sums = clipped_gradient_sums(model, params, x[None], y[None], torch.ones(1, 7), 1.0)
    coef = (1.0 / expected).clamp(max=1.0)
    for name in params:
        want = sum(c * gs[name] for c, gs in zip(coef, loop))
        torch.testing.assert_close(sums.summed[name][0], want)


def test_without_its_record_the_layer_falls_back_to_vmap():
    model = _scale_net()
    assert not supports_layer_norms(model)
    with pytest.raises(ValueError, match="method"):
        per_example_grad_norms(model, torch.randn(3, 6, dtype=torch.float64),
                               torch.tensor([0, 1, 2]), method="layers")
