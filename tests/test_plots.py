"""Every figure of the book draws from a tiny run's tables, with the panels and labels it claims."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from punl.analysis import measures
from punl.publish import plots  # noqa: E402
from punl.core.config import Config  # noqa: E402
from punl.publish.notebook import RunView  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    """Each test starts and ends with no open figure."""
    plt.close("all")
    yield
    plt.close("all")


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
    assert _labels(fig)[0] == ("training step", "accuracy (fraction of points)")
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
    assert fig.get_size_inches()[0] <= plots.WIDTH
    from punl.study.scores import spearman_matrix
    fig = plots.correlation_heatmap(spearman_matrix(scores))
    assert "Spearman" in fig.axes[0].get_title()
    plt.close("all")


def test_unlearning_figures(run):
    tables, cfg, steps = run.tables, run.config, run.steps
    q = [g for g in tables.groups.group if g.startswith("q")]
    fig = plots.attack_curves(tables.attack, q, list(cfg.methods), cfg.level)
    assert sorted(ax.get_title() for ax in fig.axes) == sorted(cfg.methods)
    assert fig.axes[0].get_xscale() == "log"
    assert any(line.get_linestyle() == "--" for line in fig.axes[0].lines)   # the null's 95%
    rows = {m: measures.with_score(measures.select(steps, m, cfg.level), tables.points,
                                   run.scores, run.primary_score) for m in cfg.methods}
    fitted = {m: measures.steps_fits(r, tables.attack.step.unique()) for m, r in rows.items()}
    fig = plots.steps_against_score(pd.concat(rows.values()), fitted, cfg.unlearn_steps,
                                    run.primary_score)
    assert fig.axes[0].get_ylabel() == "steps to unlearn"
    fig = plots.response_curves(tables.attack, rows[run.primary_method], run.primary_method)
    assert fig.axes[0].get_xscale() == "log" and len(fig.axes[0].lines) == len(q)
    fig = plots.amplitude_against_score(pd.concat(rows.values()), run.primary_score)
    assert fig.axes[0].get_yscale() == "log"
    fractions = measures.point_fractions(tables, cfg.level, tables.attack.step.unique(),
                                         cfg.unlearn_steps)
    fig = plots.point_fraction_bars(fractions)
    assert len(fig.axes) == 2
    comparison = measures.disagreement_comparison(tables, steps, run.primary_score,
                                                  list(cfg.baseline_scores), run.primary_method,
                                                  cfg.level)
    fig = plots.disagreement_bars(comparison)
    assert len(fig.axes[0].patches) == 2 * len(comparison)
    fig = plots.utility_curves(measures.utility(tables.unlearning))
    assert sorted(ax.get_title() for ax in fig.axes) == sorted(cfg.methods)
    plt.close("all")


def test_barrier_figures(run):
    tables = run.tables
    sizes = tables.groups.set_index("group").group_size.to_dict()
    fig = plots.hard_easy_paths(tables.paths, run.primary_method, run.config.unlearn_steps, sizes)
    assert [ax.get_title() for ax in fig.axes] == [
        "from the original model", f"from the model after {run.config.unlearn_steps} steps"]
    labels = {line.get_label() for ax in fig.axes for line in ax.get_lines()}
    hardest = {label for label in labels if label.startswith("hardest 5 (")}
    assert hardest and {label.rsplit(", ", 1)[1] for label in hardest} == {"forget", "control"}
    assert any(label.startswith("easiest 5 (") for label in labels)
    controlled = measures.controlled_barriers(tables.barriers, run.primary_method)
    fig = plots.controlled_barrier_figure(measures.barrier_by_group(controlled, tables.groups),
                                          run.primary_score)
    assert [ax.get_ylabel() for ax in fig.axes[:3]] == [
        "controlled barrier (nats)", "endpoint loss gap (nats)", "parameter distance"]
    fig = plots.barrier_trajectories(tables.barriers, run.primary_method)
    assert fig.axes[0].get_xscale() == "log"
    plt.close("all")


def every_figure(run):
    """Every figure the chapters draw, from the tiny run's tables: {name: draw()}."""
    tables, cfg, steps, scores = run.tables, run.config, run.steps, run.scores
    ledger, flipped = run.trained.ledger, run.data.flipped.numpy()
    rows = {m: measures.with_score(measures.select(steps, m, cfg.level), tables.points, scores,
                                   run.primary_score) for m in cfg.methods}
    fitted = {m: measures.steps_fits(r, tables.attack.step.unique()) for m, r in rows.items()}
    controlled = measures.controlled_barriers(tables.barriers, run.primary_method)
    from punl.study.scores import spearman_matrix
    q = [g for g in tables.groups.group if g.startswith("q")]
    head = measures.headline(steps, tables.points, scores, run.primary_method, cfg.level,
                             run.primary_score, tables.attack.step.unique())
    return {
        "training_curves": lambda: plots.training_curves(ledger),
        "clipped_fraction_curve": lambda: plots.clipped_fraction_curve(ledger, cfg.clip),
        "norm_trajectories": lambda: plots.norm_trajectories(ledger, flipped, cfg.clip),
        "privacy_histogram": lambda: plots.privacy_histogram(scores, run.primary_score),
        "extreme_images": lambda: plots.extreme_images(run.data.x_train.numpy(), scores,
                                                       run.primary_score),
        "correlation_heatmap": lambda: plots.correlation_heatmap(spearman_matrix(scores)),
        "attack_curves": lambda: plots.attack_curves(tables.attack, q, list(cfg.methods),
                                                     cfg.level),
        "steps_against_score": lambda: plots.steps_against_score(
            pd.concat(rows.values()), fitted, cfg.unlearn_steps, run.primary_score),
        "response_curves": lambda: plots.response_curves(tables.attack, rows[run.primary_method],
                                                         run.primary_method),
        "amplitude_against_score": lambda: plots.amplitude_against_score(
            pd.concat(rows.values()), run.primary_score),
        "point_fraction_bars": lambda: plots.point_fraction_bars(measures.point_fractions(
            tables, cfg.level, tables.attack.step.unique(), cfg.unlearn_steps)),
        "disagreement_bars": lambda: plots.disagreement_bars(measures.disagreement_comparison(
            tables, steps, run.primary_score, list(cfg.baseline_scores), run.primary_method,
            cfg.level)),
        "utility_curves": lambda: plots.utility_curves(measures.utility(tables.unlearning)),
        "hard_easy_paths": lambda: plots.hard_easy_paths(
            tables.paths, run.primary_method, cfg.unlearn_steps,
            tables.groups.set_index("group").group_size.to_dict()),
        "controlled_barrier_figure": lambda: plots.controlled_barrier_figure(
            measures.barrier_by_group(controlled, tables.groups), run.primary_score),
        "barrier_trajectories": lambda: plots.barrier_trajectories(tables.barriers,
                                                                   run.primary_method),
        "headline_figure": lambda: plots.headline_figure({"a": head},
                                                         {"a": cfg.unlearn_steps}),
        **prediction_figures(run),
        **point_figures(),
    }


def point_figures():
    """The per-point study's figures (:mod:`punl.publish.pointplots`), from a synthetic study
    with a known truth (the tiny run has no per-point study)."""
    from punl.analysis import claims, pointclaims
    from punl.publish import pointplots
    from synthetic import make_point_study
    study = make_point_study()
    choice = claims.Choice(0.05, "all", "privacy_loss_a8")
    rows, placebo = study.points(choice), study.points(choice, "placebo")
    overview = pointclaims.point_overview(study.point_steps, study.scores, choice.p_column,
                                          choice.level, study.checkpoints)
    means = pointclaims.hardest_means(rows, [choice.p_column, *study.baselines], study.budget,
                                      np.random.default_rng(0))
    return {
        "steps_against_privacy": lambda: pointplots.steps_against_privacy(
            rows, placebo, overview, study.checkpoints, choice.p_column),
        "hardest_bars": lambda: pointplots.hardest_bars(means),
        "step_distribution": lambda: pointplots.step_distribution(rows, placebo,
                                                                  study.checkpoints),
        "effect_distribution": lambda: pointplots.effect_distribution(rows, 0.5),
    }


def prediction_figures(run):
    """The figures of the prediction chapter, from the tiny run's prediction tables:
    {name: draw()}."""
    from punl.analysis import heldout, predict
    measured, tables, score = run.measured, run.predictions, run.primary_score
    held = tables["heldout_predictions"]
    models = {how: predict.fit_cost_model(measured, score, how) for how in predict.AGGREGATES}
    calibration = pd.concat([predict.calibration_points(measured, score, how) for how in models])
    curves = pd.concat([predict.prediction_curve(m, m.calibrated_low, m.calibrated_high)
                        for m in models.values()])
    adaptive = tables["adaptive"]
    return {
        "cost_curves": lambda: plots.cost_curves(calibration, curves, held[held.score == score],
                                                 measured.budget, score),
        "predicted_against_measured": lambda: plots.predicted_against_measured(held, score,
                                                                               measured.budget),
        "validation_bars": lambda: plots.validation_bars(tables["prediction_validation"]),
        "adaptive_against_fixed": lambda: plots.adaptive_against_fixed(
            heldout.fixed_budget_curve(adaptive, measured.checkpoints),
            heldout.adaptive_comparison(adaptive, measured.checkpoints)),
    }


def _texts(fig):
    """Every visible text of a figure: titles, labels, tick labels, legend entries."""
    return [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text()]


def _named_ticks(labels) -> bool:
    """Whether tick labels name categories (a heatmap's rows) rather than show numbers."""
    return any(t.get_text() and not t.get_text().replace(".", "").replace("−", "").isdigit()
               for t in labels)


def _labelled(fig, ax, axis: str) -> bool:
    """An axis is labelled, names categories, or shares a labelled axis of the figure."""
    label = getattr(ax, f"get_{axis}label")
    ticks = getattr(ax, f"get_{axis}ticklabels")
    shared = getattr(ax, f"get_shared_{axis}_axes")()
    return bool(label() or _named_ticks(ticks()) or any(
        getattr(a, f"get_{axis}label")() for a in fig.axes if shared.joined(a, ax)))


def test_every_figure_reads_at_the_books_width(run):
    """Each figure fits the text column, labels both axes of every panel it draws on and uses
    no font below the minimum; legends sit outside the panels."""
    plots.set_style()
    for name, draw in every_figure(run).items():
        fig = draw()
        width = fig.get_size_inches()[0]
        assert width <= plots.WIDTH, (name, width)
        fig.canvas.draw()
        small = {t.get_text() for t in _texts(fig) if t.get_fontsize() < plots.MIN_FONT}
        assert not small, (name, small)
        for ax in fig.axes:
            if ax.get_visible() and ax.axison and ax.has_data() and not ax.images \
                    and ax.get_label() != "<colorbar>":
                assert _labelled(fig, ax, "x"), (name, "x label")
                assert _labelled(fig, ax, "y"), (name, "y label")
            legend = ax.get_legend()
            if legend is not None:   # a legend of its own sits outside the data
                box, frame = legend.get_window_extent(), ax.get_window_extent()
                assert not box.overlaps(frame) or name == "correlation_heatmap", name
        plt.close(fig)


def test_log_ticks_are_plain_numbers():
    fig, ax = plt.subplots()
    ax.plot([0.3, 40], [1, 2])
    ax.set_xscale("log")
    plots.log_ticks(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels and all("10^" not in t and "$" not in t for t in labels), labels
    assert "1" in labels and "10" in labels
    plt.close(fig)


def test_claims_against_the_swept_value():
    numbers = pd.DataFrame({"claim": ["1. a", "1. a", "2. b", "2. b"], "measure": "m",
                            "number": [0.5, 0.7, -0.2, 0.4], "sigma": [0.5, 1.0, 0.5, 1.0],
                            "verdict": ["supported", "not supported", "inconclusive",
                                        "supported"], "fragile": [False, True, False, False]})
    fig = plots.claims_against(numbers, "sigma", log_x=True)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["1. a", "2. b"]
    assert fig.get_size_inches()[0] <= plots.WIDTH and fig.legends
    summary = pd.DataFrame({"sigma": [0.5, 1.0], "mean privacy loss (clean)": [3.0, 1.0],
                            "mean privacy loss (flipped)": [9.0, 2.0],
                            "median steps_to_unlearn": [100, 20]})
    fig = plots.sweep_overview(summary, "sigma", log_x=True)
    assert fig.axes[0].get_yscale() == "log" and fig.axes[1].get_ylabel() == "steps to unlearn"
    plt.close("all")


def test_prediction_figures(run):
    figures = {name: draw() for name, draw in prediction_figures(run).items()}
    fig = figures["cost_curves"]
    assert len(fig.axes) == 3 and fig.axes[0].get_xscale() == "log"
    assert fig.axes[0].get_ylabel() == "steps to unlearn"
    fig = figures["predicted_against_measured"]
    assert len(fig.axes) == 3 and len(fig.axes[0].lines) >= 1
    assert [ax.get_title() for ax in figures["validation_bars"].axes][1] == "interval coverage"
    assert figures["adaptive_against_fixed"].axes[0].get_ylabel() == "share of requests unlearned"
    plt.close("all")


def test_run_view_loads_stages_lazily(run, monkeypatch):
    import punl.publish.notebook as N
    view = RunView(run.config, run.out_dir)
    monkeypatch.setattr(N, "ensure_unlearned", lambda *a, **k: pytest.fail("unlearned"))
    assert view.trained.ledger.runs == run.config.runs     # training only
    assert view.primary_score == "privacy_loss_a8" and view.primary_method == "sgld"


def test_figures_of_a_run_where_no_group_responded():
    """Every amplitude <= 0 (a tiny or a low-signal run): the log-log panels say so instead of
    failing to draw."""
    import numpy as np

    from punl.analysis.measures import Headline, StepsFit
    from punl.analysis.fits import LogLogSlope
    rows = pd.DataFrame({"method": "sgld", "p": [0.1, 1.0, 10.0],
                         "response_amplitude": [0.0, -1.0, 0.0], "steps_to_unlearn": 0,
                         "status": "never distinguishable"})
    fig = plots.amplitude_against_score(rows, "privacy_loss_a8")
    fig.canvas.draw()
    assert "no group responded" in fig.axes[0].texts[0].get_text()
    no_fit = StepsFit(log_a=np.nan, log_b=np.nan, log_likelihood_log=np.nan, line_slope=np.nan,
                      log_likelihood_line=np.nan, spearman=np.nan, spearman_p=np.nan, groups=3,
                      never_distinguishable=3, censored=0)
    no_slope = LogLogSlope(slope=np.nan, low=np.nan, high=np.nan, intercept=np.nan)
    fig = plots.headline_figure({"a": Headline(rows=rows, fit=no_fit, slope=no_slope)}, {"a": 8})
    fig.canvas.draw()
    assert "no group responded" in fig.axes[1].texts[0].get_text()
    plt.close("all")


def test_predictions_beyond_the_cap_draw_as_capped_intervals():
    """A request whose whole interval lies above 1.5 K is drawn at the cap, with no negative
    error bar."""
    budget = 100
    heldout = pd.DataFrame({
        "score": "p", "aggregation": "mean", "kind": ["heldout_random", "heldout_mixed"],
        "measured_steps": [40.0, 400.0], "censored": [False, True],
        "predicted_steps": [50.0, 900.0], "steps_low": [30.0, 600.0],
        "steps_high": [80.0, float("inf")]})
    fig = plots.predicted_against_measured(heldout, "p", budget)
    fig.canvas.draw()
    tops = [max(line.get_ydata()) for line in fig.axes[0].lines if len(line.get_ydata())]
    assert max(tops) <= 1.5 * budget


def test_no_two_texts_of_a_figure_collide(run):
    """No tick label, title, axis label or legend entry of any figure sits on another."""
    plots.set_style()
    for name, draw in every_figure(run).items():
        fig = draw()
        assert not plots.text_collisions(fig), (name, plots.text_collisions(fig))
        plt.close(fig)


def test_the_collision_check_finds_a_broken_figure():
    """Twenty long tick labels on a narrow axis collide, and tick labels of ticks outside the
    view (laid out, never drawn) are not counted."""
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_xticks(range(20), [f"label {i}" for i in range(20)])
    clashes = plots.text_collisions(fig)
    assert ("label 0", "label 1") in clashes
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1])
    ax.set_xticks([-5, 0, 0.5, 1, 5])
    ax.set_xlim(0, 1)
    assert not plots.text_collisions(fig)
    drawn = {t.get_text() for t in plots.drawn_texts(fig)}
    assert drawn >= {"0.0", "0.5", "1.0"} and not drawn & {"−5", "5"}


#: A cell that makes a figure in an IPython shell with the book's style and the inline backend,
#: then prints the resolution of each draw and the figure's own (pixels per inch).
ONE_CELL = """
from IPython.testing.globalipapp import start_ipython
shell = start_ipython()
shell.run_cell("%matplotlib inline")
shell.display_formatter.active_types = ["text/plain", "image/png"]   # what a kernel renders
shell.run_cell("import matplotlib.pyplot as plt\\nfrom punl.publish.plots import set_style\\n"
               "set_style()\\ndraws = []")
shell.run_cell("fig, ax = plt.subplots(); ax.plot([1, 2]); "
               "fig.canvas.mpl_connect('draw_event', lambda e: draws.append(fig.dpi))")
print("DRAWS", *(round(d) for d in shell.user_ns["draws"]), "DPI", round(shell.user_ns["fig"].dpi))
"""


def test_a_notebook_renders_each_figure_only_for_the_page(tmp_path):
    """In a notebook (inline backend, retina) a new figure is rendered at twice its resolution
    for the page, never first at its own resolution by pyplot's end-of-cell redraw."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", ONE_CELL], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("DRAWS")]
    assert done.returncode == 0 and line, done.stdout[-2000:] + done.stderr[-2000:]
    draws, dpi = line[0].removeprefix("DRAWS").split("DPI")
    draws, dpi = [int(d) for d in draws.split()], int(dpi)     # pixels per inch, whole numbers
    assert draws and set(draws) == {2 * dpi}, (draws, dpi)
