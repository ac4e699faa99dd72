"""Forget groups, membership inference, barriers, fits and the unlearning methods."""
import numpy as np
import pandas as pd
import pytest
import torch

from punl.study.barriers import barrier_height, path_losses
from punl.engine.multimodel import looped_logits, many_logits, stack_params, stacked_logits
from punl.study.groups import make_groups


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


def test_disagreement_groups_take_the_largest_rank_gaps_both_ways_within_classes():
    from punl.study.groups import disagreement_groups, ranking
    s = _scores()
    s["avg_grad_norm"] = s["privacy_loss_a8"].rank() + np.where(np.arange(200) < 10, 150.5, 0)
    p_over, b_over = disagreement_groups(s, "privacy_loss_a8", "avg_grad_norm", 20)
    assert (p_over.label, b_over.label) == ("p_over_avg_grad_norm", "avg_grad_norm_over_p")
    rank = {c: np.argsort(ranking(s, c)) for c in ("privacy_loss_a8", "avg_grad_norm")}
    gap = (rank["privacy_loss_a8"] - rank["avg_grad_norm"]) / 200
    labels = s["label"].to_numpy()
    assert set(range(10)) <= set(b_over.indices)                 # the shifted points
    for group, sign in ((p_over, 1), (b_over, -1)):
        counts = np.bincount(labels[group.indices], minlength=4)
        assert np.abs(counts - 20 * np.bincount(labels, minlength=4) / 200).max() < 1
        for c in range(4):                                        # the extremes of each class
            inside = group.indices[labels[group.indices] == c]
            outside = np.setdiff1d(np.flatnonzero(labels == c), group.indices)
            assert (sign * gap[inside]).min() >= (sign * gap[outside]).max() - 1e-12
    assert not set(p_over.indices) & set(b_over.indices)


def test_ties_are_broken_by_the_unclipped_norm():
    s = _scores()
    s["privacy_loss_a8"] = 1.0  # every point ties
    top = make_groups(s, "privacy_loss_a8", 2, 5, 0, kinds=("top",))[0]
    assert set(top.indices) == set(s.nlargest(5, "avg_grad_norm_unclipped")["index"])


def test_group_too_large_is_named():
    with pytest.raises(ValueError, match="group_size"):
        make_groups(_scores(50), "privacy_loss_a8", n_groups=5, m=20, seed=0)


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


def test_stacked_evaluation_equals_one_by_one():
    from punl.engine.models import build_model
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
    from punl.core.methods import METHODS
    from punl.stages.pipeline import load_data
    from punl.engine.recipe import init_model
    from punl.engine.sgd import Member, run_members
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
    import punl.engine.sgd as S
    import punl.study.unlearn as U
    from punl.study.groups import make_groups
    from punl.stages.pipeline import load_data
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
    assert len(tables.points[tables.points.step == 0]) == 10 and len(tables.groups) == 1


def test_end_to_end_unlearning_tables(tiny_config, tmp_path):
    from punl.analysis.measures import group_steps
    from punl.stages.pipeline import ensure_unlearned
    from punl.core.store import ArtifactStore
    cfg = tiny_config.replace(baseline_scores=("avg_grad_norm",), n_groups=2, retrain_seeds=4,
                              n_permutations=40)
    tables = ensure_unlearned(cfg, ArtifactStore(tmp_path), progress=False)
    t = dict(tables.items())
    # what the stage computed is what a later run reads back, dtypes included (an empty part
    # once turned a whole column into object, so a computing run published other files)
    for name, saved in ensure_unlearned(cfg, ArtifactStore(tmp_path), progress=False).items():
        pd.testing.assert_frame_equal(t[name], saved, check_exact=True, obj=name)
        assert len(saved) and "object" not in set(saved.dtypes.astype(str)), name
    expected = {"q0", "q1", "bottom", "top", "random", "p_over_avg_grad_norm",
                "avg_grad_norm_over_p"}
    assert set(t["groups"].group) == expected and len(t["groups"]) == len(expected) + 1
    assert set(t["groups"].kind) == {"quantile", "bottom", "top", "random", "disagreement"}
    assert set(t["attack"].design) == {"all", "half"}
    assert t["attack"][["p_value", "adjusted_p"]].stack().between(0, 1).all()
    assert (t["attack"].adjusted_p >= t["attack"].p_value - 1e-12).all()
    assert set(t["unlearning"].model) == {"unlearned", "coupled", "independent"}
    assert t["unlearning"][["forget_acc", "retain_acc", "test_acc"]].stack().between(0, 1).all()
    assert set(t["barriers"].partner) == {"coupled", "independent"}
    assert {s.split("-")[0] for s in t["barriers"].subset} == {"forget", "control"}
    per_point = t["points"].groupby(["score", "group", "method", "step"]).size()
    assert (per_point == cfg.group_size).all()
    steps = group_steps(tables)
    assert steps.steps_to_unlearn.between(0, cfg.unlearn_steps).all()
    # censored groups sit at the budget K; a group unlearned exactly at K is not censored
    assert (steps[steps.censored].steps_to_unlearn == cfg.unlearn_steps).all()
    assert set(steps.status) <= {"never distinguishable", "unlearned", "censored"}
    never = steps[steps.status == "never distinguishable"]
    assert (never.steps_to_unlearn == 0).all()


def test_coupled_partner_replays_the_original_run(tiny_config):
    """With F empty the coupled replay is the original run; with F non-empty it stays far
    closer to the original than an independent retrained model does."""
    from punl.study.barriers import param_distance
    from punl.stages.pipeline import load_data
    from punl.engine.recipe import fit, from_scratch
    from punl.engine.train import train
    from punl.study.unlearn import coupled_replay
    cfg = tiny_config.replace(runs=2, epochs=3)
    data = load_data(cfg)
    runs, _ = train(cfg, data, progress=False)
    empty = fit(cfg, data, [coupled_replay(cfg, data, r, np.array([], int)) for r in (1, 0)])
    for replay, run in zip(empty, (runs[1], runs[0])):
        for k in replay:
            torch.testing.assert_close(replay[k].cpu(), run.final[k], rtol=1e-5, atol=1e-6)
    forget = np.arange(0, 300, 30)                  # ten points
    coupled = fit(cfg, data, [coupled_replay(cfg, data, 0, forget)])[0]
    retain = np.setdiff1d(np.arange(data.n_train), forget)
    independent = fit(cfg, data, [from_scratch(cfg, data, (99, 98), retain)])[0]
    original = {k: v.to(data.x_train.device) for k, v in runs[0].final.items()}
    near, far = param_distance(coupled, original), param_distance(independent, original)
    assert near < 0.35 * far, (near, far)


def test_parallel_groups_give_the_same_tables(tiny_config):
    from punl.study.groups import make_groups
    from punl.stages.pipeline import load_data
    from punl.engine.recipe import init_model
    from punl.study.unlearn import map_groups
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
    from punl.engine.models import build_model
    for name, n in (("mlp", 20), ("mlp", 400), ("cnn", 20)):
        model = build_model(name, (1, 8, 8), 10, width=8)
        params = [{k: v.detach() + 0.01 * s for k, v in model.named_parameters()} for s in range(3)]
        x = torch.randn(n, 1, 8, 8)
        torch.testing.assert_close(many_logits(model, params, x), looped_logits(model, params, x),
                                   rtol=1e-5, atol=1e-6)


def test_interrupted_unlearning_resumes_from_finished_groups(tiny_config, tmp_path, monkeypatch):
    import punl.study.unlearn as U
    from punl.stages.pipeline import ensure_unlearned
    from punl.core.store import ArtifactStore
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


def test_checkpoints_start_at_zero_and_end_at_the_budget():
    """Whatever n, the checkpoints span [0, K]: with n = 2 they were [0, 1], so unlearning
    stopped at step 1 whatever the budget said."""
    from punl.study.unlearn import checkpoint_steps
    assert checkpoint_steps(400, 2).tolist() == [0, 400]
    assert checkpoint_steps(400, 9).tolist() == [0, 1, 2, 6, 13, 31, 72, 170, 400]
    for budget in (1, 2, 7, 400, 10 ** 6):
        for n in range(2, 12):
            steps = checkpoint_steps(budget, n)
            assert steps[0] == 0 and steps[-1] == budget and (np.diff(steps) > 0).all()
            assert len(steps) <= n
