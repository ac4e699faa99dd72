"""Every figure of the book draws from a tiny run's tables, with the panels and labels it claims."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from punl import analysis, plots  # noqa: E402
from punl.config import Config  # noqa: E402
from punl.notebook import RunView  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = Config(name="plots", n_train=150, runs=2, epochs=2, batch_size=32, width=8,
                 record_every=5, label_noise=0.1, n_groups=2, group_size=5, unlearn_steps=4,
                 n_checkpoints=3, retrain_seeds=2, n_bootstrap=5, barrier_points=3, clip=10.0,
                 baseline_scores=("avg_grad_norm",), n_permutations=20, heldout_requests=1)
    return RunView(cfg, tmp_path_factory.mktemp("plots"))


def _labels(fig):
    return [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]


def test_training_figures(run):
    ledger, flipped = run.trained.ledger, run.data.flipped.numpy()
    fig = plots.training_curves(ledger)
    assert _labels(fig)[0] == ("training step", "accuracy")
    assert len(fig.axes[0].lines) >= 2 * ledger.runs
    fig = plots.clipped_fraction_curve(ledger, run.config.clip)
    assert fig.axes[0].lines[0].get_ydata().max() <= 1
    fig = plots.norm_trajectories(ledger, flipped, run.config.clip, n=3)
    assert len(fig.axes) == 2 and fig.axes[0].get_yscale() == "log"
    plt.close("all")


def test_score_figures(run):
    scores = run.scores
    fig = plots.privacy_histogram(scores, run.primary_score)
    assert fig.axes[0].get_xscale() == "log"
    fig = plots.extreme_images(run.data.x_train.numpy(), scores, run.primary_score, n=4)
    assert len(fig.axes) == 8 and "P = " in fig.axes[0].get_title()
    from punl.scores import spearman_matrix
    fig = plots.correlation_heatmap(spearman_matrix(scores))
    assert "Spearman" in fig.axes[0].get_title()
    plt.close("all")


def test_unlearning_figures(run):
    tables, cfg, steps = run.tables, run.config, run.steps
    q = [g for g in tables.groups.group if g.startswith("q")]
    fig = plots.attack_curves(tables.attack, q, list(cfg.methods), cfg.level)
    assert [ax.get_title() for ax in fig.axes] == list(cfg.methods)
    assert fig.axes[0].get_xscale() == "log"
    assert any(line.get_linestyle() == "--" for line in fig.axes[0].lines)   # the null's 95%
    rows = {m: analysis.with_score(analysis.select(steps, m, cfg.level), tables.points,
                                   run.scores, run.primary_score) for m in cfg.methods}
    fitted = {m: analysis.steps_fits(r, tables.attack.step.unique()) for m, r in rows.items()}
    fig = plots.steps_against_score(pd.concat(rows.values()), fitted, cfg.unlearn_steps,
                                    run.primary_score)
    assert fig.axes[0].get_ylabel() == "steps to unlearn"
    fig = plots.response_curves(tables.attack, rows[run.primary_method], run.primary_method)
    assert fig.axes[0].get_xscale() == "log" and len(fig.axes[0].lines) == len(q)
    fig = plots.amplitude_against_score(pd.concat(rows.values()), run.primary_score)
    assert fig.axes[0].get_yscale() == "log"
    fractions = analysis.point_fractions(tables, cfg.level, tables.attack.step.unique(),
                                         cfg.unlearn_steps)
    fig = plots.point_fraction_bars(fractions)
    assert len(fig.axes) == 2
    comparison = analysis.disagreement_comparison(tables, steps, run.primary_score,
                                                  list(cfg.baseline_scores), run.primary_method,
                                                  cfg.level)
    fig = plots.disagreement_bars(comparison)
    assert len(fig.axes[0].patches) == 2 * len(comparison)
    grid = plots.utility_curves(analysis.utility(tables.unlearning))
    assert len(grid.axes.flat) == len(cfg.methods)
    plt.close("all")


def test_barrier_figures(run):
    tables = run.tables
    grid = plots.path_losses_figure(tables.paths, run.primary_method)
    assert {ax.get_title().split("|")[-1].strip() for ax in grid.axes.flat} >= \
        {"partner = coupled", "partner = independent"}
    controlled = analysis.controlled_barriers(tables.barriers, run.primary_method)
    fig = plots.controlled_barrier_figure(analysis.barrier_by_group(controlled, tables.groups),
                                          run.primary_score)
    assert [ax.get_ylabel() for ax in fig.axes[:3]] == ["controlled_barrier", "loss_gap",
                                                        "distance"]
    grid = plots.barrier_trajectories(tables.barriers, run.primary_method)
    assert grid.axes.flat[0].get_xscale() == "log"
    plt.close("all")


def test_prediction_figures(run):
    from punl import predict
    measured, tables, score = run.measured, run.predictions, run.primary_score
    held = tables["heldout_predictions"]
    models = {how: predict.fit_cost_model(measured, score, how) for how in predict.AGGREGATES}
    calibration = pd.concat([predict.calibration_points(measured, score, how) for how in models])
    curves = pd.concat([predict.prediction_curve(m, m.calibrated_low, m.calibrated_high)
                        for m in models.values()])
    fig = plots.cost_curves(calibration, curves, held[held.score == score], measured.budget,
                            score)
    assert len(fig.axes) == 3 and fig.axes[0].get_xscale() == "log"
    assert fig.axes[0].get_ylabel() == "steps to unlearn"
    fig = plots.predicted_against_measured(held, score, measured.budget)
    assert len(fig.axes) == 3 and len(fig.axes[0].lines) >= 1
    fig = plots.validation_bars(tables["prediction_validation"])
    assert [ax.get_title() for ax in fig.axes][1] == "interval coverage"
    adaptive = tables["adaptive"]
    comparison = predict.adaptive_comparison(adaptive, measured.checkpoints)
    fig = plots.adaptive_against_fixed(predict.fixed_budget_curve(adaptive, measured.checkpoints),
                                       comparison)
    assert fig.axes[0].get_ylabel() == "share of requests unlearned"
    plt.close("all")


def test_run_view_loads_stages_lazily(run, monkeypatch):
    import punl.notebook as N
    view = RunView(run.config, run.out_dir)
    monkeypatch.setattr(N, "ensure_unlearned", lambda *a, **k: pytest.fail("unlearned"))
    assert view.trained.ledger.runs == run.config.runs     # training only
    assert view.primary_score == "privacy_loss_a8" and view.primary_method == "sgld"
