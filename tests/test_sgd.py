"""The noisy-SGD engine: one step against a hand computation, Poisson batches, coupled replays,
many models at once against one at a time, and snapshots that resume bit for bit."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from punl.core.methods import UpdateRule
from punl.engine.models import MODELS, build_model
from punl.engine.pergrad import detached_params
from punl.engine.sgd import Member, Population, _Frames, noisy_sgd_step, run_members, stack

SHAPES = {"logreg": (1, 6, 6), "mlp": (1, 6, 6), "cnn": (3, 8, 8), "resnet": (3, 8, 8)}
# the engine's checks run on a GPU too where one is visible (there the batch frames take the
# padded-capacity path, with no data-dependent shapes)
DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])]


def _loop_clipped_sum(model, params, x, y, clip):
    """sum_i min(1, C/||g_i||) g_i by a plain per-example loop, and the number clipped."""
    model = model.double()
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(params[k])
    summed = {k: torch.zeros_like(p) for k, p in params.items()}
    clipped = 0
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        g = {k: p.grad for k, p in model.named_parameters()}
        norm = float(torch.sqrt(sum(v.pow(2).sum() for v in g.values())))
        scale = 1.0 if clip is None else min(1.0, clip / norm)
        clipped += clip is not None and norm > clip
        for k in summed:
            summed[k] += scale * g[k]
    return summed, clipped


def test_one_step_matches_hand_computation_with_padding():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    starts = [detached_params(model), {k: v + 0.3 for k, v in detached_params(model).items()}]
    x = torch.randn(2, 4, 3, dtype=torch.float64)
    y = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]])
    weights = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])        # member 1: three real rows
    noise = {k: torch.randn(2, *p.shape, dtype=torch.float64) for k, p in starts[0].items()}
    rule = UpdateRule(lr=0.3, sigma=0.7, clip=0.5, expected_batch=5, weight_decay=0.01)
    new = noisy_sgd_step(model, stack(starts), x, y, weights, noise, rule)
    for s, n_real in enumerate((4, 3)):
        summed, _ = _loop_clipped_sum(model, starts[s], x[s, :n_real], y[s, :n_real], 0.5)
        for k, p in starts[s].items():
            expected = p - 0.3 * ((summed[k] + 0.7 * 0.5 * noise[k][s]) / 5 + 0.01 * p)
            torch.testing.assert_close(new[k][s], expected, rtol=1e-10, atol=1e-12)


def test_unclipped_step_is_plain_sgd_and_l1_adds_the_sign():
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 2).double()
    params = detached_params(model)
    x, y = torch.randn(1, 6, 3, dtype=torch.float64), torch.randint(0, 2, (1, 6))
    zero = {k: torch.zeros(1, *p.shape, dtype=torch.float64) for k, p in params.items()}
    rule = UpdateRule(lr=0.1, sigma=0.0, clip=1e-3, expected_batch=6, clip_per_example=False,
                      l1_penalty=0.01)
    new = noisy_sgd_step(model, stack([params]), x, y, torch.ones(1, 6), zero, rule)
    model.zero_grad()
    F.cross_entropy(model(x[0]), y[0]).backward()  # mean over 6 == sum / B
    for k, p in model.named_parameters():
        expected = p.detach() - 0.1 * (p.grad + 0.01 * torch.sign(p.detach()))
        torch.testing.assert_close(new[k][0], expected, rtol=1e-10, atol=1e-12)


def test_poisson_batches_have_the_binomial_size_and_come_from_the_frame():
    frame = np.arange(100, 1100)
    members = [Member({}, 0, frame, rate=0.05)]
    frames = _Frames.of(members, UpdateRule(0.1, 1.0, 1.0, 50), "cpu")
    gen = torch.Generator().manual_seed(0)
    sizes = []
    for _ in range(2000):
        idx, weights, size = frames.batches(torch.rand(1, 1000, generator=gen), None)
        chosen = idx[0][weights[0]]
        assert set(chosen.tolist()) <= set(frame.tolist()) and len(set(chosen.tolist())) == len(chosen)
        sizes.append(int(size[0]))
    # 2000 Binomial(1000, 0.05) draws: sd of the mean = sqrt(47.5 / 2000) ~ 0.15
    assert abs(np.mean(sizes) - 50) < 0.6
    assert np.var(sizes) == pytest.approx(1000 * 0.05 * 0.95, rel=0.15)


def test_excluded_points_drop_out_of_exactly_the_same_draws():
    frame, forget = np.arange(60), np.array([3, 17, 42])
    rule = UpdateRule(0.1, 1.0, 1.0, 12)
    full = _Frames.of([Member({}, 0, frame)], rule, "cpu")
    replay = _Frames.of([Member({}, 0, frame, excluded=forget, rate=12 / 60)], rule, "cpu")
    gen = torch.Generator().manual_seed(1)
    for _ in range(50):
        u = torch.rand(1, 60, generator=gen)
        a, wa, _ = full.batches(u, None)
        b, wb, _ = replay.batches(u, None)
        assert set(b[0][wb[0]].tolist()) == set(a[0][wa[0]].tolist()) - set(forget.tolist())


def _members(name, n_points=40, seeds=(5, 6, 7), device="cpu"):
    """A model, data on ``device`` and three members: plain, on a sub-frame, with exclusions
    at their own rate."""
    torch.manual_seed(0)
    model = build_model(name, SHAPES[name], 4, width=4).double().to(device)
    x = torch.randn(n_points, *SHAPES[name], dtype=torch.float64).to(device)
    y = torch.randint(0, 4, (n_points,)).to(device)
    out = []
    for i, seed in enumerate(seeds):
        torch.manual_seed(10 + i)
        start = detached_params(build_model(name, SHAPES[name], 4, width=4).double())
        frame = np.arange(n_points) if i != 1 else np.arange(5, n_points)
        excluded = np.array([0, 7]) if i == 2 else None
        out.append(Member(start, seed, frame, excluded, rate=0.25 if i == 2 else None))
    return model, x, y, out


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("device", DEVICES)
def test_many_models_at_once_equal_one_at_a_time(name, device):
    model, x, y, members = _members(name, device=device)
    rule = UpdateRule(lr=0.05, sigma=0.5, clip=1.0, expected_batch=8, weight_decay=0.001)
    together = run_members(model, members, x, y, rule, [0, 2, 5])
    for s, member in enumerate(members):
        alone = run_members(model, [member], x, y, rule, [0, 2, 5])[0]
        for a, b in zip(together[s], alone):
            for k in a:
                assert a[k].device.type == device
                torch.testing.assert_close(a[k], b[k], rtol=1e-9, atol=1e-11)
    regrouped = run_members(model, members[::-1][:2], x, y, rule, [5])   # members 2 and 1
    for s, r in ((2, 0), (1, 1)):
        for k in regrouped[r][0]:
            torch.testing.assert_close(regrouped[r][0][k], together[s][2][k], rtol=1e-9,
                                       atol=1e-11)
    first = next(iter(members[0].start))
    assert not torch.equal(together[0][2][first].cpu(), members[0].start[first])


def test_a_member_replayed_without_excluded_points_and_empty_exclusion_is_the_original():
    model, x, y, members = _members("mlp")
    rule = UpdateRule(lr=0.05, sigma=0.5, clip=1.0, expected_batch=8)
    original = members[0]
    same = Member(original.start, original.seed, original.frame, excluded=np.array([], int),
                  rate=8 / len(original.frame))
    a, b = run_members(model, [original, same], x, y, rule, [12])
    for k in a[0]:
        assert torch.equal(a[0][k], b[0][k])


@pytest.mark.parametrize("device", DEVICES)
def test_snapshot_between_blocks_resumes_bit_for_bit(device):
    model, x, y, members = _members("mlp", device=device)
    rule = UpdateRule(lr=0.05, sigma=0.5, clip=1.0, expected_batch=8)
    straight = Population(model, members, x, y, rule)
    straight.advance(48)
    first = Population(model, members, x, y, rule)
    first.advance(32)
    state = first.state()
    resumed = Population(model, members, x, y, rule)
    resumed.restore(state)
    resumed.advance(16)
    for k in straight.params:
        assert torch.equal(straight.params[k], resumed.params[k])
    first.advance(3)
    with pytest.raises(RuntimeError, match="inside a block"):
        first.state()


def test_sizes_reach_on_step_and_frames_must_fit_the_batch():
    model, x, y, members = _members("logreg")
    rule = UpdateRule(lr=0.05, sigma=0.5, clip=1.0, expected_batch=8)
    seen = []
    population = Population(model, members, x, y, rule)
    population.advance(3, on_step=lambda t, p, sizes: seen.append((t, sizes.tolist())))
    assert [t for t, _ in seen] == [0, 1, 2] and all(len(s) == 3 for _, s in seen)
    with pytest.raises(ValueError, match="batch_size"):
        Population(model, members, x, y, rule.replace(expected_batch=100))


def test_a_noiseless_rule_sees_the_batches_of_a_noisy_one_with_the_same_seed():
    model, x, y, members = _members("mlp")
    noisy = UpdateRule(lr=0.05, sigma=0.5, clip=1.0, expected_batch=8)
    sizes = {}
    for name, rule in (("noisy", noisy), ("plain", noisy.replace(sigma=0.0))):
        seen = sizes.setdefault(name, [])
        Population(model, members, x, y, rule).advance(
            20, on_step=lambda t, p, s, seen=seen: seen.append(s.tolist()))
    assert sizes["noisy"] == sizes["plain"]
