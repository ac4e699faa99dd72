"""Baseline metrics against hand computations, and the scores table on a real run."""
import numpy as np
import pytest

from punl.engine.metrics import baseline_metrics, early_average, time_average


def _tiny_ledger():
    rng = np.random.default_rng(0)
    shape = (2, 3, 4)  # runs, records, points
    return {"clipped_norm": rng.uniform(0, 1, shape), "grad_norm": rng.uniform(0, 2, shape),
            "prob": rng.uniform(0, 1, shape), "el2n": rng.uniform(0, 1.4, shape),
            "steps": np.array([0, 4, 10]), "steps_per_record": np.array([4, 6, 2])}


def test_time_average_by_hand():
    L = _tiny_ledger()
    got = time_average(L["clipped_norm"], L["steps_per_record"])
    for i in range(4):
        total = sum(w * (L["clipped_norm"][0, k, i] + L["clipped_norm"][1, k, i]) / 2
                    for k, w in enumerate([4, 6, 2]))
        assert got[i] == pytest.approx(total / 12, rel=1e-12)


def test_baseline_metrics_by_hand():
    from punl.engine.ledger import Ledger
    L = _tiny_ledger()
    f32 = {k: L[k].astype(np.float32) for k in ("clipped_norm", "grad_norm", "prob", "el2n")}
    L.update(f32)
    ledger = Ledger(**f32, loss=f32["prob"], record_steps=L["steps"].astype(np.int64),
                    steps_per_record=L["steps_per_record"].astype(np.int64),
                    batch_sizes=np.zeros((2, 12), np.int64),
                    train_acc=np.zeros((2, 3), np.float32), test_acc=np.zeros((2, 3), np.float32))
    m = baseline_metrics(ledger, final_loss=np.arange(4.0), el2n_until_step=5)
    e = L["el2n"]
    np.testing.assert_allclose(m["el2n"], (e[0, 0] + e[0, 1] + e[1, 0] + e[1, 1]) / 4, rtol=1e-6)
    w = np.array([4, 6, 2]) / 12
    np.testing.assert_allclose(m["confidence"], (w[None, :, None] * L["prob"]).sum(1).mean(0),
                               rtol=1e-6)
    np.testing.assert_allclose(m["avg_grad_norm_unclipped"],
                               (w[None, :, None] * L["grad_norm"]).sum(1).mean(0), rtol=1e-6)
    assert m["final_loss"].tolist() == [0, 1, 2, 3]


def test_el2n_uses_at_least_the_first_record():
    L = _tiny_ledger()
    np.testing.assert_allclose(early_average(L["el2n"], L["steps"], -1), L["el2n"][:, 0].mean(0))


def test_metrics_reject_bad_ledgers():
    with pytest.raises(ValueError, match="clipped_norm"):
        time_average(np.zeros((2, 3)), [1, 1, 1], "clipped_norm")
    with pytest.raises(ValueError, match="NaN"):
        time_average(np.full((1, 2, 2), np.nan), [1, 1])
    with pytest.raises(ValueError, match="steps_per_record"):
        time_average(np.zeros((1, 2, 2)), [-1, 1])


def test_scores_table_on_a_real_run_flipped_points_score_higher(tmp_path):
    """digits with 10% label noise: mislabeled points must carry more privacy loss."""
    from punl.core.config import Config
    from punl.stages.pipeline import ensure_scored
    from punl.study.scores import spearman_matrix
    from punl.core.store import ArtifactStore
    cfg = Config(dataset="digits", label_noise=0.1, runs=2, epochs=5, clip=10.0, record_every=10)
    scores = ensure_scored(cfg, ArtifactStore(tmp_path), progress=False)
    expected = {"index", "label", "true_label", "flipped", "epsilon", "avg_grad_norm",
                "avg_grad_norm_unclipped", "final_loss", "confidence", "el2n"}
    assert expected | {f"privacy_loss_a{a:g}" for a in cfg.orders} <= set(scores.columns)
    assert scores["flipped"].sum() == round(0.1 * len(scores))
    flipped, clean = scores[scores.flipped], scores[~scores.flipped]
    for col in ("privacy_loss_a8", "epsilon", "avg_grad_norm", "final_loss", "el2n"):
        assert flipped[col].mean() > clean[col].mean(), col
    assert flipped["confidence"].mean() < clean["confidence"].mean()
    # privacy loss grows with the order alpha, point by point
    assert np.all(np.diff(scores[[f"privacy_loss_a{a:g}" for a in cfg.orders]].to_numpy(), axis=1)
                  >= -1e-12)
    rho = spearman_matrix(scores)
    assert rho.loc["privacy_loss_a8", "avg_grad_norm"] > 0.5
    assert np.allclose(np.diag(rho), 1.0)


def test_memorisation_by_hand():
    from punl.study.shadow import memorisation, shadow_memberships
    members = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=bool)
    correct = np.array([[1, 0], [0, 1], [1, 0], [1, 1]])
    # point 0: in = models 0, 2 (both correct) -> 1; out = 1, 3 -> 0.5; point 1: in 1,2 -> .5; out 0,3 -> .5
    np.testing.assert_allclose(memorisation(correct, members), [0.5, 0.0])
    m = shadow_memberships(101, 6, seed=0)
    assert m.shape == (6, 101) and (m.sum(1) == 50).all()
    assert not np.array_equal(m[0], m[1])


def test_lira_score_prefers_in_distribution():
    from punl.study.shadow import lira_scores
    rng = np.random.default_rng(0)
    members = rng.random((16, 30)) < 0.5
    phi = np.where(members, 3.0, 0.0) + rng.normal(0, 0.3, (16, 30))
    score_in = lira_scores(phi, members, np.full((2, 30), 3.0))
    score_out = lira_scores(phi, members, np.full((2, 30), 0.0))
    assert (score_in > 0).all() and (score_out < 0).all()


def test_shadow_columns_on_a_real_run(tmp_path):
    from punl.core.config import Config
    from punl.stages.pipeline import ensure_scored
    from punl.core.store import ArtifactStore
    cfg = Config(dataset="digits", n_train=300, label_noise=0.1, runs=2, epochs=5, clip=10.0,
                 width=16, shadow_models=4)
    scores = ensure_scored(cfg, ArtifactStore(tmp_path), progress=False)
    assert {"memorisation", "lira_score"} <= set(scores.columns)
    # a point that every shadow model (or none) trained on has no estimate: P = 2 / 2^4
    assert scores["memorisation"].isna().mean() < 0.25
    assert scores["memorisation"].dropna().between(-1, 1).all()
    assert np.isfinite(scores["lira_score"].dropna()).all()
    # training on a point makes a model more likely to get it right, on average
    assert scores["memorisation"].mean() > 0.02
