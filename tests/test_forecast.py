"""``punl plan``: the forecast's arithmetic, its probe's fractions for every shipped
configuration, a forecast of the tiny configuration and the command."""
import json
import math

import pytest

from bookutil import TINY_SETTINGS, tiny_without
from punl.commands.cli import main
from punl.core.config import ConfigError, load_config
from punl.core.yamlfiles import builtin_configs
from punl.engine.data import DatasetUnavailable
from punl.engine.recipe import total_steps
from punl.stages.forecast import (GROWTH, MIN_FRACTION, StageForecast, extrapolate, forecast,
                                  probe_fractions, scaled)
from punl.stages.preflight import check_training, training_points
from punl.study.unlearn import checkpoint_steps

#: Training points of the image sets whose files are not on this machine (their full size).
FULL_SIZE = {"cifar10": 50_000, "svhn": 73_257}


def test_extrapolate_follows_the_line_through_the_two_probes():
    a, b = 3.0, 40.0
    line = lambda f: a + b * f  # noqa: E731
    # the arithmetic of a few float operations: exact to a few units in the last place
    assert extrapolate((0.05, 0.2), (line(0.05), line(0.2))) == pytest.approx(a + b, rel=1e-12)
    # a slower first probe (noise) never predicts less than the second probe
    assert extrapolate((0.05, 0.2), (5.0, 4.0)) == 4.0
    # the whole configuration probed (a configuration of a few steps): its own time
    assert extrapolate((1.0, 1.0), (2.0, 2.5)) == 2.5


def test_stage_time_counts_rounds_of_workers_then_the_starts():
    s = StageForecast("unlearn", jobs=13, workers=2, job_seconds=10.0, start_seconds=3.0,
                      first_call_seconds=1.5, probe_fractions=(0.1, 0.4),
                      probe_seconds=(4.0, 7.0), process_bytes=2**30)
    assert s.rounds == 7
    assert s.seconds == pytest.approx(7 * 10.0 + 3.0 + 1.5, rel=1e-12)
    assert s.memory_bytes == 2 * 2**30
    empty = StageForecast("pointwise", 0, 1, 0.0, 5.0, 1.0, (0.1, 0.4), (0.0, 0.0), 0.0)
    assert empty.seconds == 0.0 and empty.rounds == 0


def _training_points(config) -> int:
    try:
        return training_points(config)
    except (DatasetUnavailable, ConfigError, FileNotFoundError):
        return config.n_train or FULL_SIZE[config.dataset]


@pytest.mark.parametrize("name", sorted(builtin_configs()))
def test_probe_fractions_keep_every_configurations_design(name):
    config = load_config(name)
    n = _training_points(config)
    f1, f2 = probe_fractions(config, n)
    assert MIN_FRACTION <= f1 < f2 == min(1.0, GROWTH * f1)
    full = checkpoint_steps(config.unlearn_steps, config.n_checkpoints)
    for f in (f1, f2):
        small = scaled(config, f)
        assert small.epochs == pytest.approx(config.epochs * f, rel=1e-12)
        assert len(checkpoint_steps(small.unlearn_steps, small.n_checkpoints)) == len(full)
        check_training(small, n)     # the preflight's own rule: a ledger record after step 0
        assert total_steps(small, n) < total_steps(config, n) or f == 1.0


def test_a_configuration_of_a_few_steps_is_probed_nearly_whole():
    # checkpoints 0, 1, 2, 3: round(3 f) = 3 first at f = 0.84, and f2 = min(1, 4 f1)
    config = load_config("digits-quick", tiny_without(
        "name", "record_every", "data_root", "unlearn_steps", "n_checkpoints") + [
        "unlearn_steps=3", "n_checkpoints=4", "record_every=null", "records_per_epoch=2"])
    f1, f2 = probe_fractions(config, 200)
    assert f1 == pytest.approx(0.84, abs=1e-9) and f2 == 1.0


@pytest.fixture(scope="module")
def tiny_forecast():
    return forecast(load_config("digits-quick", TINY_SETTINGS + ["workers=1"]), progress=False)


def test_forecast_of_the_tiny_configuration(tiny_forecast):
    stages = {s.stage: s for s in tiny_forecast.stages}
    assert list(stages) == ["train", "score", "pointwise", "unlearn"]
    # 48 models in two halves of 24, each one chunk; 2 quantile groups, bottom, top and random,
    # and one held-out request of each of three kinds
    assert stages["pointwise"].jobs == 2 * math.ceil(24 / 64)
    assert stages["unlearn"].jobs == 2 + 3 + 3 * 1
    for s in stages.values():
        assert s.job_seconds > 0 and s.process_bytes > 50 * 2**20, s
        assert s.workers == 1 and s.start_seconds == 0.0 and s.first_call_seconds == 0.0
        assert s.seconds == pytest.approx(s.jobs * s.job_seconds, rel=1e-12)
    assert tiny_forecast.seconds == pytest.approx(sum(s.seconds for s in stages.values()),
                                                  rel=1e-12)
    assert tiny_forecast.probe_wall_seconds > 0
    lines = tiny_forecast.table().splitlines()
    assert lines[0].split() == ["stage", "jobs", "per", "job", "rounds", "time", "memory", "at",
                                "once"]
    assert [line.split()[0] for line in lines[1:5]] == list(stages)


def test_reused_stages_cost_nothing(tiny_forecast):
    from dataclasses import replace
    reused = replace(tiny_forecast, reused=("train", "score", "pointwise"))
    assert reused.seconds == pytest.approx(tiny_forecast.stage("unlearn").seconds, rel=1e-12)
    assert "reused" in reused.table()


def test_plan_command_prints_the_forecast_as_json(capsys):
    args = ["plan", "digits-quick", "--json", "--quiet"] + [
        x for s in TINY_SETTINGS + ["workers=1"] for x in ("--set", s)]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["stages"]) == {"train", "score", "pointwise", "unlearn"}
    assert out["seconds"] == pytest.approx(sum(s["seconds"] for s in out["stages"].values()),
                                           abs=0.05)   # each rounded to 0.01 s


def test_plan_command_refuses_a_bad_field_before_probing(capsys):
    assert main(["plan", "digits-quick", "--set", "unlearn_steps=-1"]) == 2
    assert "unlearn_steps" in capsys.readouterr().err
