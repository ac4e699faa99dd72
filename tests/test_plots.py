"""Every figure of the book draws from a tiny run's tables, with the panels and labels it claims."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from punl import analysis, plots  # noqa: E402
from punl.config import Config  # noqa: E402
from punl.notebook import RunView  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = Config(name="plots", n_train=150, runs=2, epochs=2, batch_size=32, width=8,
                 record_every=5, label_noise=0.1, n_groups=2, group_size=5, unlearn_steps=4,
                 n_checkpoints=3, retrain_seeds=2, n_bootstrap=5, barrier_points=3, clip=10.0,
                 baseline_scores=("avg_grad_norm",))
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
    tables, cfg = run.tables, run.config
    fig = plots.mia_curves(tables.unlearning, run.primary_score, list(cfg.methods), 0.55)
    assert [ax.get_title() for ax in fig.axes] == list(cfg.methods)
    assert fig.axes[0].get_xscale() == "log"
    fits = analysis.method_fits(tables.steps, run.primary_score, list(cfg.methods))
    fig = plots.steps_against_score(tables.steps, fits, run.primary_score)
    assert _labels(fig)[0] == (f"group median {run.primary_score} (log scale)", "steps to unlearn")
    fig = plots.hardest_m_bars(analysis.hardest_m(tables.steps, run.primary_method))
    assert len(fig.axes) == 2
    grid = plots.utility_curves(analysis.utility(tables.unlearning))
    assert len(grid.axes.flat) == len(cfg.methods)
    plt.close("all")


def test_barrier_figures(run):
    tables = run.tables
    grid = plots.path_losses_figure(tables.barriers, run.primary_score, run.primary_method)
    assert len(grid.axes.flat) == 2                       # coupled and independent partners
    step0 = analysis.step0_barriers(tables.barriers, tables.steps, run.primary_score,
                                    run.primary_method)
    fig = plots.barrier_scatter(step0, run.primary_score)
    assert [ax.get_ylabel() for ax in fig.axes[:3]] == ["barrier", "loss_gap", "distance"]
    grid = plots.barrier_trajectories(tables.barriers, run.primary_score)
    assert grid.axes.flat[0].get_xscale() == "log"
    plt.close("all")


def test_run_view_loads_stages_lazily(run, monkeypatch):
    import punl.notebook as N
    view = RunView(run.config, run.out_dir)
    monkeypatch.setattr(N, "ensure_unlearned", lambda *a, **k: pytest.fail("unlearned"))
    assert view.trained.ledger.runs == run.config.runs     # training only
    assert view.primary_score == "privacy_loss_a8" and view.primary_method == "sgld"
