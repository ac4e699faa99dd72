"""Forget groups, membership inference, barriers, fits and the unlearning methods."""
import numpy as np
import pandas as pd
import pytest
import torch

from punl.analysis import fit_line, fit_log, log_model
from punl.barriers import barrier_height, path_losses
from punl.multimodel import looped_logits, many_logits, stack_params, stacked_logits
from punl.groups import make_groups
from punl.mia import (centered, gaussian_fit_accuracy, group_attack, lira_phi,
                      split_attack_accuracy, steps_to_unlearn)


def _scores(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"index": np.arange(n), "label": rng.integers(0, 4, n),
                         "privacy_loss_a8": rng.exponential(size=n),
                         "avg_grad_norm_unclipped": rng.uniform(size=n)})


def test_groups_partition_and_retain_set_excludes_forget_points():
    s = _scores()
    groups = make_groups(s, "privacy_loss_a8", n_groups=4, m=10, seed=0)
    assert [g.label for g in groups] == ["q0", "q1", "q2", "q3", "bottom", "top", "random"]
    for g in groups:
        assert len(g.indices) == 10 and len(set(g.indices)) == 10
        retain = g.retain_indices(len(s))
        assert not set(retain) & set(g.indices) and len(retain) == len(s) - 10
    medians = [g.score_median for g in groups[:4]]
    assert medians == sorted(medians)
    top = groups[5]
    assert set(top.indices) == set(s.nlargest(10, "privacy_loss_a8")["index"])
    again = make_groups(s, "privacy_loss_a8", n_groups=4, m=10, seed=0)
    assert all(np.array_equal(a.indices, b.indices) for a, b in zip(groups, again))


def test_ties_are_broken_by_the_unclipped_norm():
    s = _scores()
    s["privacy_loss_a8"] = 1.0  # every point ties
    top = make_groups(s, "privacy_loss_a8", 2, 5, 0, kinds=("top",))[0]
    assert set(top.indices) == set(s.nlargest(5, "avg_grad_norm_unclipped")["index"])


def test_group_too_large_is_named():
    with pytest.raises(ValueError, match="group_size"):
        make_groups(_scores(50), "privacy_loss_a8", n_groups=5, m=20, seed=0)


def test_lira_phi_is_stable_and_exact():
    logits = torch.tensor([[2.0, 0.5, -1.0], [300.0, 0.0, -300.0]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    p = torch.softmax(logits[0], 0)[0]
    assert float(lira_phi(logits, y)[0]) == pytest.approx(float(torch.log(p / (1 - p))), rel=1e-12)
    assert float(lira_phi(logits, y)[1]) == pytest.approx(300.0, rel=1e-9)  # p = 1 in float64


def test_attack_is_chance_on_one_distribution_and_high_on_separated_ones():
    rng = np.random.default_rng(0)
    same = [group_attack(rng.normal(size=(8, 50)), rng.normal(size=(8, 50)), 20, rng)["mia_acc"]
            for _ in range(20)]
    assert abs(np.mean(same) - 0.5) < 0.03
    base = rng.normal(size=50) * 5  # points differ a lot from one another
    far = group_attack(base + 6 + rng.normal(size=(8, 50)), base + rng.normal(size=(8, 50)), 20, rng)
    assert far["mia_acc"] > 0.9 and far["mia_ci_low"] > 0.8


def test_centering_is_what_reveals_a_small_shift():
    rng = np.random.default_rng(1)
    base = rng.normal(size=60) * 10
    u, r = base + 1 + rng.normal(size=(8, 60)) * 0.5, base + rng.normal(size=(8, 60)) * 0.5
    fold = rng.permutation(60) < 30
    assert split_attack_accuracy(u, r, fold) < 0.65             # pooled raw values hide it
    cu, cr = centered(u, r)
    assert split_attack_accuracy(cu, cr, fold) > 0.8             # centered values show it


def test_bootstrap_interval_covers_the_truth_near_its_nominal_rate():
    rng = np.random.default_rng(2)
    truth, covered, trials = 0.5, 0, 60
    for _ in range(trials):
        a = group_attack(rng.normal(size=(6, 40)), rng.normal(size=(6, 40)), 100, rng)
        covered += a["mia_ci_low"] <= truth <= a["mia_ci_high"]
    assert covered / trials >= 0.8


def test_gaussian_fit_accuracy():
    rng = np.random.default_rng(3)
    far = gaussian_fit_accuracy(rng.normal(5, 1, (50, 4)), rng.normal(0, 1, (50, 4)))
    assert np.all(far > 0.95)
    same = gaussian_fit_accuracy(rng.normal(0, 1, (2000, 4)), rng.normal(0, 1, (2000, 4)))
    assert np.all(same < 0.56)


def test_steps_to_unlearn_requires_staying_below_and_censors():
    steps = np.array([0, 1, 3, 10])
    d = np.array([[True, True, True], [False, True, True], [True, False, True], [False, False, True]])
    got, cens = steps_to_unlearn(steps, d)
    # point 0 dips at step 1 but is distinguishable again at 3: it counts from step 10
    assert got.tolist() == [10, 3, 10] and cens.tolist() == [False, False, True]


def test_barrier_zero_for_identical_models_positive_on_a_nonconvex_toy():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    a = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.randn(30, 2)
    lam = np.linspace(0, 1, 11)
    # permuting hidden units gives the same function at both ends but a different path
    perm = torch.randperm(8)
    b = {"0.weight": a["0.weight"][perm], "0.bias": a["0.bias"][perm],
         "2.weight": a["2.weight"][:, perm], "2.bias": a["2.bias"]}
    scale = {k: v * 4 for k, v in a.items()}
    b = {k: v * 4 for k, v in b.items()}
    from torch.func import functional_call
    y = functional_call(model, scale, (x,)).argmax(1)  # both endpoints fit these labels
    assert barrier_height(lam, path_losses(model, a, a, x, y, lam)) == pytest.approx(0, abs=1e-7)
    assert barrier_height(lam, path_losses(model, scale, b, x, y, lam)) > 0.01
    with pytest.raises(ValueError, match="lambdas"):
        barrier_height(np.array([0.0, 1.0]), np.array([1.0, 1.0]))


def test_log_fit_recovers_known_parameters():
    rng = np.random.default_rng(4)
    p = np.geomspace(0.1, 1000, 40)
    steps = log_model(p, 12.0, 0.3) + rng.normal(0, 0.05, len(p))
    fit = fit_log(p, steps)
    assert fit["a"] == pytest.approx(12.0, rel=0.02) and fit["b"] == pytest.approx(0.3, rel=0.05)
    assert fit["r2"] > 0.999 and fit_line(p, steps)["r2"] < fit["r2"]


def test_stacked_evaluation_equals_one_by_one():
    from punl.models import build_model
    model = build_model("cnn", (1, 8, 8), 10, width=8)
    params = []
    for s in range(3):
        torch.manual_seed(s)
        params.append({k: v.detach().clone() for k, v in build_model(
            "cnn", (1, 8, 8), 10, width=8).named_parameters()})
    x = torch.randn(17, 1, 8, 8)
    torch.testing.assert_close(stacked_logits(model, stack_params(params), x, chunk_size=5),
                               looped_logits(model, params, x), rtol=1e-5, atol=1e-6)


def test_finetune_is_sgld_without_noise_and_clipping(tiny_config):
    from punl.methods import METHODS
    from punl.pipeline import load_data
    from punl.recipe import init_model
    from punl.sgd import Member, run_members
    cfg = tiny_config.replace(sigma=0.0, per_example_clipping=False)
    data = load_data(cfg)
    model = init_model(cfg, data, 0)
    start = Member({k: v.detach() for k, v in model.named_parameters()}, 11,
                   np.arange(data.n_train))

    def run(config, method):
        return run_members(model, [start], data.x_train, data.y_train, METHODS[method](config),
                           [0, 3, 7])[0]

    a, b = run(cfg, "sgld"), run(cfg, "finetune")
    for pa, pb in zip(a, b):
        for k in pa:
            assert torch.equal(pa[k], pb[k])
    noisy = run(tiny_config, "sgld")
    assert not torch.equal(noisy[-1]["0.weight"] if "0.weight" in noisy[-1] else
                           next(iter(noisy[-1].values())), next(iter(a[-1].values())))


def test_retraining_and_unlearning_never_sample_a_forget_point(tiny_config, monkeypatch):
    import punl.sgd as S
    import punl.unlearn as U
    from punl.groups import make_groups
    from punl.pipeline import load_data
    data = load_data(tiny_config)
    scores = _scores(data.n_train)
    scores["label"] = data.y_train.numpy()
    group = make_groups(scores, "privacy_loss_a8", 3, 10, 0, kinds=("top",))[0]
    frames = []
    real = S._Frames.of

    def spy(members, rule, device):
        frames.append(real(members, rule, device))
        return frames[-1]

    monkeypatch.setattr(S._Frames, "of", spy)
    start = {k: v.detach() for k, v in U.init_model(tiny_config, data, 0).named_parameters()}
    tables = U.unlearn_group(tiny_config, data, [start, start], group, methods=("sgld",))
    # one population retrains, one runs every trajectory of the method
    assert len(frames) == 2
    for f in frames:
        sampled = set(f.index[f.joinable].tolist())
        assert sampled and not sampled & set(group.indices.tolist())
    assert len(tables.steps_points) == 10 and len(tables.steps) == 1


def test_end_to_end_unlearning_tables(tiny_config, tmp_path):
    from punl.pipeline import ensure_unlearned
    from punl.store import ArtifactStore
    cfg = tiny_config.replace(baseline_scores=("avg_grad_norm",), n_groups=2, retrain_seeds=4)
    t = dict(ensure_unlearned(cfg, ArtifactStore(tmp_path), progress=False).items())
    assert {"score", "group", "method", "seed", "step", "forget_acc", "retain_acc", "test_acc",
            "mia_acc", "mia_ci_low", "mia_ci_high"} <= set(t["unlearning"].columns)
    assert set(t["steps"].group) == {"q0", "q1", "bottom", "top", "random"}
    assert set(t["steps"].score) == {"privacy_loss_a8", "avg_grad_norm"}
    assert t["steps"].steps_to_unlearn.between(0, cfg.unlearn_steps).all()
    # censored groups sit at the budget K; a group unlearned exactly at K is not censored
    assert (t["steps"][t["steps"].censored].steps_to_unlearn == cfg.unlearn_steps).all()
    assert {"original-retrained", "unlearned-retrained"} == set(t["barriers"].pair)
    assert set(t["barriers"].partner) == {"coupled", "independent"}
    points = t["steps_points"]
    assert points[["distinguishability_step0", "distinguishability_final"]].stack().between(0.5, 1).all()
    assert t["unlearning"][["forget_acc", "retain_acc", "test_acc"]].stack().between(0, 1).all()


def test_hardest_m_claim_breaks_ties_by_mean_mia_accuracy():
    from punl.analysis import _hardest_claim
    top = pd.DataFrame({"steps_to_unlearn": [400, 400, 100], "mean_mia_acc": [0.7, 0.65, 0.55],
                        "mean_mia_ci_halfwidth": [0.02, 0.02, 0.02]},
                       index=pd.Index(["privacy_loss_a8", "el2n", "avg_grad_norm"], name="score"))
    assert _hardest_claim(top, "privacy_loss_a8")["verdict"] == "supported"
    top.loc["el2n", "mean_mia_acc"] = 0.69  # within the bootstrap half-width: no verdict
    assert _hardest_claim(top, "privacy_loss_a8")["verdict"] == "inconclusive"
    top.loc["el2n", "mean_mia_acc"] = 0.75
    assert _hardest_claim(top, "privacy_loss_a8")["verdict"] == "not supported"
    top.loc["privacy_loss_a8", "steps_to_unlearn"] = 50
    assert _hardest_claim(top, "privacy_loss_a8")["verdict"] == "not supported"
    assert _hardest_claim(top.drop(["el2n", "avg_grad_norm"]), "privacy_loss_a8")["verdict"] == \
        "inconclusive"


def test_parallel_groups_give_the_same_tables(tiny_config):
    from punl.groups import make_groups
    from punl.pipeline import load_data
    from punl.recipe import init_model
    from punl.unlearn import map_groups
    cfg = tiny_config.replace(unlearn_steps=6, n_checkpoints=3, retrain_seeds=2, n_bootstrap=10,
                              methods=("finetune",), primary_method="finetune")
    data = load_data(cfg)
    scores = _scores(data.n_train)
    scores["label"] = data.y_train.numpy()
    groups = make_groups(scores, "privacy_loss_a8", 2, 5, 0, kinds=("top", "random"))
    start = [{k: v.detach() for k, v in init_model(cfg, data, s).named_parameters()} for s in (0, 1)]
    serial = list(map_groups(cfg, data, start, groups, progress=False))
    parallel = list(map_groups(cfg.replace(workers=2), data, start, groups, progress=False))
    assert len(serial) == len(parallel) == 2
    for a, b in zip(serial, parallel):
        for (name, frame), (_, other) in zip(a.items(), b.items()):
            pd.testing.assert_frame_equal(frame, other)


def test_many_logits_is_the_same_whichever_way_it_evaluates():
    from punl.models import build_model
    for name, n in (("mlp", 20), ("mlp", 400), ("cnn", 20)):
        model = build_model(name, (1, 8, 8), 10, width=8)
        params = [{k: v.detach() + 0.01 * s for k, v in model.named_parameters()} for s in range(3)]
        x = torch.randn(n, 1, 8, 8)
        torch.testing.assert_close(many_logits(model, params, x), looped_logits(model, params, x),
                                   rtol=1e-5, atol=1e-6)


def test_interrupted_unlearning_resumes_from_finished_groups(tiny_config, tmp_path, monkeypatch):
    import punl.unlearn as U
    from punl.pipeline import ensure_unlearned
    from punl.store import ArtifactStore
    cfg = tiny_config.replace(unlearn_steps=6, n_checkpoints=3, retrain_seeds=2, n_bootstrap=10,
                              methods=("finetune",), primary_method="finetune", n_groups=2,
                              baseline_scores=())
    store = ArtifactStore(tmp_path)
    real, calls = U.unlearn_group, []

    def dies_on_the_third(config, data, final, group, *a, **k):
        calls.append(group.label)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(config, data, final, group, *a, **k)

    monkeypatch.setattr(U, "unlearn_group", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        ensure_unlearned(cfg, store, progress=False)
    assert not store.stage(cfg, "unlearn").is_complete()
    monkeypatch.setattr(U, "unlearn_group", lambda *a, **k: calls.append("again") or real(*a, **k))
    with pytest.warns(UserWarning, match="partial"):
        tables = ensure_unlearned(cfg, store, progress=False)
    n_groups = 2 + 3  # two quantile groups, bottom, top, random
    assert calls.count("again") == n_groups - 2           # the two finished groups were reused
    fresh = ensure_unlearned(cfg, ArtifactStore(tmp_path / "fresh"), progress=False)
    for (name, frame), (_, other) in zip(tables.items(), fresh.items()):
        pd.testing.assert_frame_equal(frame, other)
