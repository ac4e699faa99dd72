"""The per-point study's engine: its design, its models and the test per point, against
independent computations (scipy's t-test, the models run one at a time)."""
import numpy as np
import pytest
import torch
from scipy import stats

from punl.study import pointwise
from punl.core.methods import METHODS
from punl.study.mia import lira_phi
from punl.stages.pipeline import load_data
from punl.engine.recipe import fit, from_scratch, init_model
from punl.engine.sgd import Member, run_steps


@pytest.fixture
def point_config(tiny_config):
    return tiny_config.replace(point_models=40, forget_probability=0.25)


def test_welch_from_moments_equals_scipy():
    rng = np.random.default_rng(0)
    u, r = rng.normal(0.3, 1, (30, 50)), rng.normal(0, 2, (30, 50))
    tested = rng.random((30, 50)) < 0.5
    moments = pointwise._moments(u, r, tested)
    got = pointwise.welch_from_moments(*moments)
    for i in range(50):
        keep = tested[:, i]
        ref = stats.ttest_ind(u[keep, i], r[keep, i], equal_var=False)
        # float64 sums against scipy's two-pass moments: agreement to ~1e-12 relative
        assert got["t"][i] == pytest.approx(ref.statistic, rel=1e-9)
        assert got["p_value"][i] == pytest.approx(ref.pvalue, rel=1e-7)


def test_welch_from_moments_reads_degenerate_points_as_no_difference():
    got = pointwise.welch_from_moments(np.array([1.0, 5.0]), np.array([2.0, 10.0]),
                                       np.array([4.0, 20.0]), np.array([1.0, 10.0]),
                                       np.array([1.0, 20.0]))
    assert got["p_value"].tolist() == [1.0, 1.0]       # one value; two identical samples


def test_design_rows_do_not_depend_on_the_number_of_models(point_config):
    small = pointwise.point_design(point_config, 300, 100)
    large = pointwise.point_design(point_config.replace(point_models=80), 300, 100)
    assert small.forget.shape == (40, 300) and small.placebo.shape == (40, 100)
    assert (large.forget[:40] == small.forget).all() and (large.placebo[:40] == small.placebo).all()
    assert abs(small.forget.mean() - 0.25) < 0.03
    chunks = pointwise.chunks(large)
    assert np.concatenate(chunks).tolist() == list(range(80))
    assert all((c < 40).all() or (c >= 40).all() for c in chunks)


def test_a_chunk_is_the_models_run_one_at_a_time(point_config):
    """Model 3's moments on the points it tests are its own phi: its original trained on D
    then unlearning on R_3, and its reference retrained on R_3 then continued by the same
    method for the same steps (age-matched), computed here model by model."""
    cfg, data = point_config, load_data(point_config)
    design = pointwise.point_design(cfg, data.n_train, len(data.y_test))
    result = pointwise.run_chunk(cfg, data, design, np.array([3]))
    retain, k = design.retain(3), int(design.checkpoints[-1])
    rule = METHODS[cfg.primary_method](cfg)
    original = fit(cfg, data, [from_scratch(cfg, data, pointwise.model_seeds(cfg, 3, "original"),
                                            np.arange(data.n_train))])[0]
    retrained = fit(cfg, data, [from_scratch(cfg, data, pointwise.model_seeds(cfg, 3, "retrained"),
                                             retain)])[0]
    model = init_model(cfg, data, 0)
    ends = run_steps(model, [Member(original, pointwise.unlearning_seed(cfg, 3, "unlearned"), retain),
                             Member(retrained, pointwise.unlearning_seed(cfg, 3, "retrained"), retain)],
                     data.x_train, data.y_train, rule, k)
    x = torch.cat([data.x_train, data.x_test])
    y = torch.cat([data.y_train, data.y_test])
    with torch.no_grad():
        phi = [lira_phi(torch.func.functional_call(model, p, (x,)), y).double().numpy()
               for p in ends]
    tested = design.membership[3]
    n, sum_u, _, sum_r, _ = result.moments[:, 0, -1]          # model 3 is in the first half
    assert (n == tested).all()
    # the same float32 arithmetic model by model as stacked: equal to float32 rounding
    assert sum_u[tested] == pytest.approx(phi[0][tested], rel=1e-4, abs=1e-4)
    assert sum_r[tested] == pytest.approx(phi[1][tested], rel=1e-4, abs=1e-4)
    assert set(result.utility.model) == {"unlearned", "retrained"}


def test_the_study_does_not_depend_on_its_chunking(point_config, monkeypatch):
    data = load_data(point_config)
    first = pointwise.run_pointwise(point_config, data, progress=False)
    monkeypatch.setattr(pointwise, "MODELS_PER_JOB", 7)
    second = pointwise.run_pointwise(point_config, data, progress=False)
    a, b = first["point_tests"], second["point_tests"]
    assert a[["set", "index", "design", "step", "models"]].equals(
        b[["set", "index", "design", "step", "models"]])
    # float32 models in populations of another size take batched products of other shapes,
    # which round differently (~1e-7 relative per step); over the T + K steps phi moves by
    # about 1e-6, so each t agrees to well within 1e-4
    np.testing.assert_allclose(a.t, b.t, rtol=1e-3, atol=1e-4)
    assert (a.p_value <= 0.05).sum() == pytest.approx((b.p_value <= 0.05).sum(), abs=2)


def test_a_tiny_study_holds_its_placebo_at_the_level(point_config):
    from punl.analysis.pointclaims import placebo_rate, point_steps
    data = load_data(point_config)
    tables = pointwise.run_pointwise(point_config, data, progress=False)
    tests = tables["point_tests"]
    assert set(tests.set) == {"train", "placebo"} and set(tests.design) == {"all", "half"}
    assert len(tests) == 2 * 4 * (data.n_train + len(data.y_test))
    steps = point_steps(tests)
    rate = placebo_rate(steps, 0.05)
    assert rate.points == len(data.y_test) and rate.rate <= 0.05 + 3 * rate.se
    half = tests[(tests.design == "half") & (tests.step == 0)].models
    assert half.mean() == pytest.approx(tests[(tests.design == "all") & (tests.step == 0)].models.mean() / 2, rel=0.2)


def test_the_stage_reads_back_what_it_computed(point_config, tmp_path):
    """The per-point tables and the scores a stage computed are, dtypes included, what a
    later run reads back from the store, so a run publishes the same files either way."""
    import pandas as pd
    from punl.core.store import ArtifactStore
    from punl.stages.pipeline import ensure_pointwise, ensure_scored
    computed = {"scores": ensure_scored(point_config, ArtifactStore(tmp_path), progress=False),
                **ensure_pointwise(point_config, ArtifactStore(tmp_path), progress=False)}
    read = {"scores": ensure_scored(point_config, ArtifactStore(tmp_path), progress=False),
            **ensure_pointwise(point_config, ArtifactStore(tmp_path), progress=False)}
    assert sorted(computed) == sorted(read) and len(read) >= 3
    for name, frame in read.items():
        pd.testing.assert_frame_equal(computed[name], frame, check_exact=True, obj=name)
