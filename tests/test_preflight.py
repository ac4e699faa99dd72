"""Every bad input stops the command before any work: exit code 2, one line naming the field
and the fix, no traceback, nothing created."""
import dataclasses
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from punl.commands.cli import main
from punl.commands import runner, sweep
from punl.core import outputs
from punl.core.config import Config, ConfigError, valid_keys
from punl.stages.preflight import check_accounting, check_groups, check_training, preflight

REPO = Path(__file__).resolve().parent.parent
# A tiny digits configuration: N = 200 training points, retain sets of 192.
SMALL_FIELDS = {"n_train": 200, "group_size": 8, "n_groups": 2, "runs": 1, "epochs": 1,
                "record_every": 1}
SMALL = [a for k, v in SMALL_FIELDS.items() for a in ("--set", f"{k}={v}")]


def small(**changes) -> list[str]:
    """SMALL with some of its fields changed, or left out where the change is None (a field
    may be set only once)."""
    return [a for k, v in {**SMALL_FIELDS, **changes}.items() if v is not None
            for a in ("--set", f"{k}={v}")]
FILES = {"bad.yaml": "a: [1\n", "list.yaml": "- 1\n- 2\n", "scalar.yaml": "3\n",
         "escape.yaml": "name: /tmp/elsewhere\n", "afile": "not a folder\n",
         "twice.yaml": "sigma: 0.5\nlr: 0.1\nsigma: 1.0\n", "empty.yaml": "\n",
         "binary.yaml": "\udcff\udcfe"}


def sets(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


# (id, command line, the field the message must start with)
CASES = [
    # non-finite and out-of-range numbers
    ("clip-inf", ["train", "digits-quick", *sets("clip=.inf")], "clip"),
    ("lr-inf", ["train", "digits-quick", *sets("lr=.inf")], "lr"),
    ("lr-nan", ["train", "digits-quick", *sets("lr=.nan")], "lr"),
    ("epochs-inf", ["train", "digits-quick", *sets("epochs=.inf")], "epochs"),
    ("sigma-nan", ["score", "digits-quick", *sets("sigma=.nan")], "sigma"),
    ("sigma-negative", ["train", "digits-quick", *sets("sigma=-1")], "sigma"),
    ("delta-one", ["score", "digits-quick", *sets("delta=1")], "delta"),
    ("orders-one", ["score", "digits-quick", *sets("orders=[1]")], "orders"),
    ("runs-text", ["train", "digits-quick", *sets("runs=two")], "runs"),
    ("runs-zero", ["train", "digits-quick", *sets("runs=0")], "runs"),
    ("workers-zero", ["unlearn", "digits-quick", *sets("workers=0")], "workers"),
    # the privacy accountant
    ("sigma-zero-score", ["score", "digits-quick", *SMALL, *sets("sigma=0")], "sigma"),
    ("sigma-zero-run", ["run", "digits-quick", *SMALL, *sets("sigma=0")], "sigma"),
    ("sigma-tiny", ["unlearn", "digits-quick", *SMALL, *sets("sigma=1e-300")], "sigma"),
    # sizes against the data
    ("n-train-too-large", ["train", "digits-quick", *sets("n_train=5000")], "n_train"),
    ("n-train-one", ["train", "digits-quick", *sets("n_train=1")], "n_train"),
    ("batch-above-n", ["train", "digits-quick", *SMALL, *sets("batch_size=201")], "batch_size"),
    ("batch-q1-retain", ["unlearn", "digits-quick", *SMALL, *sets("batch_size=195")],
     "batch_size"),
    ("batch-equals-retain", ["run", "digits-quick", *SMALL, *sets("batch_size=192")],
     "batch_size"),
    ("groups-exceed-n", ["unlearn", "digits-quick", *small(group_size=150)],
     "group_size"),
    ("heldout-negative", ["unlearn", "digits-quick", *sets("heldout_requests=-1")],
     "heldout_requests"),
    ("heldout-mixed-too-large", ["run", "digits-quick",
                                 *small(group_size=150, n_groups=1, heldout_requests=1)],
     "heldout_requests"),
    ("group-is-everything", ["unlearn", "digits-quick", *small(group_size=200, n_groups=1)],
     "group_size"),
    ("test-fraction-tiny", ["train", "digits-quick", *sets("test_fraction=0.001")],
     "test_fraction"),
    # score columns the scores table will not have
    ("primary-score-unknown", ["unlearn", "digits-quick", *sets("primary_score=nope")],
     "primary_score"),
    ("baseline-needs-shadows", ["unlearn", "digits-quick",
                                *sets("baseline_scores=[lira_score]")], "baseline_scores"),
    ("primary-method-absent", ["unlearn", "digits-quick", *sets("primary_method=l1_sparse")],
     "primary_method"),
    ("method-unknown", ["unlearn", "digits-quick", *sets("methods=[magic]")], "methods"),
    # datasets and devices
    ("dataset-files-missing", ["train", "digits-quick",
                               *sets("dataset=cifar10", "data_root=empty")], "dataset"),
    ("dataset-unknown", ["train", "digits-quick", *sets("dataset=imagenet")], "dataset"),
    ("device-unknown", ["train", "digits-quick", *sets("device=tpu")], "device"),
    # names that would leave the project
    ("name-absolute", ["run", "digits-quick", *sets("name=/tmp/elsewhere")], "name"),
    ("name-parent", ["run", "digits-quick", *sets("name=../elsewhere")], "name"),
    ("name-nested", ["unlearn", "digits-quick", *sets("name=a/b")], "name"),
    ("name-in-yaml", ["run", "escape.yaml"], "name"),
    # configuration files and overrides
    ("yaml-malformed", ["train", "bad.yaml"], "config"),
    ("yaml-list", ["train", "list.yaml"], "config"),
    ("yaml-scalar", ["run", "scalar.yaml"], "config"),
    ("config-missing", ["train", "no-such-config"], "config"),
    # ambiguity: one meaning or an error
    ("yaml-duplicate-key", ["train", "twice.yaml"], "config: 'sigma' is given twice"),
    ("yaml-empty", ["train", "empty.yaml"], "config"),
    ("yaml-binary", ["train", "binary.yaml"], "config"),
    ("set-twice", ["train", "digits-quick", *sets("sigma=0.5", "sigma=1")], "--set sigma"),
    ("grid-twice", ["sweep", "digits-quick", "--grid", "sigma=0.5", "--grid", "sigma=1"],
     "--grid sigma"),
    ("out-empty", ["train", "digits-quick", "--out", ""], "--out"),
    ("unknown-key", ["train", "digits-quick", *sets("learning_rate=0.1")], "unknown key"),
    ("set-without-value", ["train", "digits-quick", "--set", "lr"], "--set"),
    ("set-bad-yaml", ["train", "digits-quick", "--set", "orders=[2,"], "--set orders"),
    # folders
    ("out-is-a-file", ["run", "digits-quick", *SMALL, "--out", "afile"], "--out"),
    ("out-under-a-file", ["unlearn", "digits-quick", *SMALL, "--out", "afile/x"], "--out"),
    ("book-dir-is-a-file", ["run", "digits-quick", *SMALL, "--book-dir", "afile"],
     "--book-dir"),
    # odd layouts inside punl's own (marked) output folders
    ("staging-is-a-file", ["run", "digits-quick", *SMALL, "--out", "odd/staging"], "--out"),
    ("stage-folder-is-a-file", ["train", "digits-quick", *SMALL, "--out", "odd/stage"],
     "--out"),
    ("published-is-a-file", ["unlearn", "digits-quick", *SMALL, "--out", "odd/published"],
     "--out"),
    # sweeps
    ("sweep-workers-zero", ["sweep", "digits-quick", *SMALL, "--grid", "sigma=1,2",
                            "--workers", "0"], "--workers"),
    ("sweep-workers-negative", ["sweep", "digits-quick", *SMALL, "--grid", "sigma=1,2",
                                "--workers", "-2"], "--workers"),
    ("sweep-name-parent", ["sweep", "digits-quick", *SMALL, "--grid", "sigma=1",
                           "--name", "../elsewhere"], "--name"),
    ("sweep-name-absolute", ["sweep", "digits-quick", *SMALL, "--grid", "sigma=1",
                             "--name", "/tmp/elsewhere"], "--name"),
    ("scheduler-refused", ["sweep", "digits-quick", *SMALL, "--grid", "sigma=1",
                           "--scheduler", "tcp://127.0.0.1:1", "--scheduler-timeout", "2"],
     "--scheduler"),
    ("scheduler-silent", ["sweep", "digits-quick", *SMALL, "--grid", "sigma=1",
                          "--scheduler", "{silent}", "--scheduler-timeout", "1"], "--scheduler"),
    ("scheduler-not-dask", ["sweep", "digits-quick", *SMALL, "--grid", "sigma=1",
                            "--scheduler", "{talker}", "--scheduler-timeout", "1"],
     "--scheduler"),
    ("scheduler-no-port", ["sweep", "digits-quick", *SMALL, "--grid", "sigma=1",
                           "--scheduler", "nonsense"], "--scheduler"),
    ("scheduler-scheme", ["sweep", "digits-quick", *SMALL, "--grid", "sigma=1",
                          "--scheduler", "foo://host:1"], "--scheduler"),
    ("grid-equal-spellings", ["sweep", "digits-quick", *SMALL, "--grid", "lr=0.1,.1"],
     "--grid lr"),
    ("grid-int-and-float", ["sweep", "digits-quick", *SMALL, "--grid", "lr=1,1.0"], "--grid lr"),
    ("grid-name", ["sweep", "digits-quick", *SMALL, "--grid", "name=a,b"], "--grid"),
    ("grid-unknown-key", ["sweep", "digits-quick", *SMALL, "--grid", "nope=1"], "--grid"),
    ("grid-no-values", ["sweep", "digits-quick", *SMALL, "--grid", "sigma="], "--grid"),
    ("grid-bad-yaml", ["sweep", "digits-quick", *SMALL, "--grid", "orders=[2,"], "--grid orders"),
    ("grid-bad-point", ["sweep", "digits-quick", *SMALL, "--grid", "sigma=0.5,0"], "sigma"),
    ("grid-point-too-large", ["sweep", "digits-quick", *small(n_train=None), "--grid",
                              "n_train=100,5000"], "n_train"),
    ("grid-and-set", ["sweep", "digits-quick", *SMALL, "--grid", "n_train=100,150"],
     "--grid n_train: also given with --set"),
    ("sweep-set-name", ["sweep", "digits-quick", *sets("name=mine"), "--grid", "seed=1,2"],
     "--set name"),
]


# Every field's non-finite, negative, zero, huge, wrong-type and ambiguous forms, as YAML
FORMS = {"nan": ".nan", "inf": ".inf", "neg-inf": "-.inf", "negative": "-1", "zero": "0",
         "huge": "1000000000000", "overflow": "18446744073709551616", "text": "text",
         "list": "[1, 2]", "mapping": "{a: 1}", "spaced": "'1 2'", "null": "null",
         "bool": "true", "fraction": "2.5", "tiny": "1.0e-300"}
NUMBERS = ("nan", "inf", "neg-inf", "negative", "zero", "huge", "overflow", "fraction", "tiny")


def _forms(*names: str) -> set[str]:
    return set(names)


#: The forms each field takes, because they mean something: text fields read numbers as names
#: or paths; null where a field is optional; 0 where it switches a feature off; fractions of
#: a float field; a cap (chunk_size, utility_points) that may exceed what it caps. Learning
#: rates, noise, clipping and penalties of any float32 size are judged once training runs: the
#: divergence check refuses to publish a run whose loss rises
#: (test_a_diverging_run_stops_with_one_line_and_is_never_marked_complete).
VALID = {
    "name": _forms("nan", "inf", "zero", "huge", "overflow", "text", "fraction", "tiny"),
    "data_root": _forms(*NUMBERS, "text", "spaced"),
    "n_train": _forms("null"), "label_noise": _forms("zero", "tiny"),
    "synthetic_outliers": _forms("zero"), "data_seed": _forms("zero"), "seed": _forms("zero"),
    "epochs": _forms("fraction"),
    "lr": _forms("huge", "overflow", "fraction"),
    "sigma": _forms("zero", "huge", "overflow", "fraction"),
    "clip": _forms("huge", "overflow", "fraction"),
    "weight_decay": _forms("zero", "huge", "overflow", "fraction"),
    "unlearn_lr": _forms("null", "huge", "overflow", "fraction"),
    "l1_penalty": _forms("zero", "huge", "overflow", "fraction"),
    "per_example_clipping": _forms("bool"), "baseline_groups": _forms("bool"),
    "coupled": _forms("bool"), "force": _forms("bool"),
    "records_per_epoch": _forms("null"), "chunk_size": _forms("huge", "overflow", "null"),
    "delta": _forms("tiny"), "el2n_epochs": _forms("fraction", "tiny"),
    "shadow_models": _forms("zero"), "utility_points": _forms("huge", "overflow", "null"),
    "heldout_requests": _forms("zero"), "point_models": _forms("zero"),
}
#: Where the message names the field a value conflicts with (it says what to change).
NAMED = {("epochs", "tiny"): "el2n_epochs", ("record_every", "null"): "records_per_epoch",
         ("orders", "fraction"): "primary_score", ("forget_probability", "tiny"): "point_models"}
COMMAND = {"train": "train", "score": "score", "pointwise": "run", "unlearn": "unlearn",
           "analysis": "unlearn", "runtime": "unlearn"}
FIELD_CASES = [(f"{f.name}-{form}",
                [COMMAND[f.metadata["stage"]], "digits-quick", "--set", f"{f.name}={value}"],
                NAMED.get((f.name, form), f.name))
               for f in dataclasses.fields(Config) for form, value in FORMS.items()
               if form not in VALID.get(f.name, ())]


@pytest.fixture
def no_work(monkeypatch):
    """Any command that gets past its checks stops at once (instead of running for minutes):
    taking the output folder's lock is the first step of work."""
    def refuse(*_, **__):
        raise AssertionError("the input was accepted: work started")
    for module in (outputs, runner, sweep):
        monkeypatch.setattr(module, "output_lock", refuse)


@pytest.mark.parametrize("argv,field", [c[1:] for c in FIELD_CASES],
                         ids=[c[0] for c in FIELD_CASES])
def test_every_fields_bad_forms_stop_with_one_line(workdir, no_work, capsys, argv, field):
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"punl: configuration error: {field}"), lines[0]
    assert created(workdir) == set()


def test_the_valid_forms_are_accepted(workdir, no_work):
    """The forms listed as meaningful pass every check (and reach the lock)."""
    for name, forms in VALID.items():
        stage = next(f.metadata["stage"] for f in dataclasses.fields(Config) if f.name == name)
        for form in sorted(forms):
            with pytest.raises(AssertionError, match="work started"):
                main([COMMAND[stage], "digits-quick", "--set", f"{name}={FORMS[form]}"])


@pytest.fixture(scope="module")
def endpoints():
    """Two local TCP servers that are not dask schedulers: one never answers, one answers
    with something else."""
    silent, talker = socket.socket(), socket.socket()
    for s in (silent, talker):
        s.bind(("127.0.0.1", 0))
        s.listen()

    def talk():
        while True:
            conn, _ = talker.accept()
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 8)

    threading.Thread(target=talk, daemon=True).start()
    yield {name: f"tcp://127.0.0.1:{s.getsockname()[1]}"
           for name, s in (("silent", silent), ("talker", talker))}
    silent.close()


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory holding only the files the cases name."""
    for name, text in FILES.items():
        (tmp_path / name).write_text(text, errors="surrogateescape")
    (tmp_path / "empty").mkdir()
    for name, file in ODD_LAYOUTS.items():       # punl's marked folders, a file where a folder goes
        (tmp_path / "odd" / name / file).parent.mkdir(parents=True)
        (tmp_path / "odd" / name / ".punl").write_text("")
        (tmp_path / "odd" / name / file).write_text("not a folder\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


ODD_LAYOUTS = {"staging": ".staging", "stage": "artifacts/train-0123456789ab",
               "published": "published"}


def created(folder: Path) -> set[str]:
    odd = {str(p.relative_to(folder)) for p in (folder / "odd").rglob("*")}
    assert odd == {"odd/" + n for n in ODD_LAYOUTS} | {f"odd/{n}/.punl" for n in ODD_LAYOUTS} | {
        f"odd/{n}/{f}" for n, f in ODD_LAYOUTS.items()} | {"odd/stage/artifacts"}, odd
    return {p.name for p in folder.iterdir()} - set(FILES) - {"empty", "odd"}


@pytest.mark.parametrize("argv,field", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_stops_with_one_line_and_creates_nothing(workdir, endpoints, capsys, argv,
                                                           field):
    argv = [a.format(**endpoints) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"punl: configuration error: {field}"), lines[0]
    assert "Traceback" not in err
    assert created(workdir) == set() and not list((workdir / "empty").iterdir())


def test_every_listed_input_is_covered():
    assert len(CASES) >= 51 and len({c[0] for c in CASES}) == len(CASES)
    assert len(CASES) + len(FIELD_CASES) >= 250 and set(VALID) <= set(valid_keys())


@pytest.mark.parametrize("argv", [
    ["run", "digits-quick", "--set", "sigma=1e-300"],
    ["sweep", "digits-quick", "--grid", "seed=1", "--workers", "0"],
    ["train", "bad.yaml"],
], ids=["run-sigma", "sweep-workers", "train-yaml"])
def test_the_installed_entry_point_prints_one_line(workdir, argv):
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "punl.commands.cli", *argv], capture_output=True,
                          text=True, cwd=workdir, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert created(workdir) == set()


def test_train_alone_accepts_sigma_zero_but_scoring_does_not():
    cfg = Config(n_train=200, sigma=0.0)
    assert preflight(cfg, "train") == 200
    with pytest.raises(ConfigError, match="^sigma: 0 adds no noise"):
        preflight(cfg, "score")


def test_size_checks_name_the_bound():
    cfg = Config(batch_size=64, group_size=20, n_groups=5)
    check_training(cfg, 64)
    with pytest.raises(ConfigError, match="^batch_size: 64 exceeds the 63"):
        check_training(cfg, 63)
    check_groups(cfg, 100)
    with pytest.raises(ConfigError, match="^batch_size: .*use batch_size < 64"):
        check_groups(cfg.replace(n_groups=2), 84)
    with pytest.raises(ConfigError, match="^group_size: 5 groups of 20 points need 100"):
        check_groups(cfg, 99)
    check_accounting(cfg.replace(sigma=1e-3), 1000)
    with pytest.raises(ConfigError, match="^sigma: must be 0 or between 1.18e-38"):
        cfg.replace(sigma=1e-170)        # float32 would read it as 0: no noise


def test_the_law_tests_cost_counts_only_where_the_claims_are_computed():
    """``law_simulations`` is read by the claims (with the group study): a value past the
    analysis limit stops ``punl unlearn``, naming it, but not training or scoring."""
    from punl.stages.resources import check_resources
    cfg = Config(n_train=1000, law_simulations=10**9)
    for through in ("train", "score"):
        check_resources(cfg, 1000, through)
    with pytest.raises(ConfigError, match="^law_simulations: .*log-law test"):
        check_resources(cfg, 1000, "unlearn")


@pytest.mark.parametrize("lr, message", [
    # float32 holds it; steps overflow (the norms or the losses first, as the BLAS build rounds)
    ("1e38", r"the ledger's (loss|grad_norm) holds non-finite values .*"),
    ("1e10", r"training diverged: the mean training loss rose from .*"),   # finite, absurd
], ids=["non-finite", "loss-explodes"])
def test_a_diverging_run_stops_with_one_line_and_is_never_marked_complete(workdir, capsys, lr,
                                                                          message):
    """A finite but absurd lr cannot be refused before training; its result is, whether it
    is non-finite or a training loss that ends far above its start."""
    argv = ["train", "digits-quick", "--set", "n_train=120", "--set", "runs=1", "--set",
            "epochs=1", "--set", "width=8", "--set", "batch_size=32", "--set", f"lr={lr}",
            "--set", "record_every=1", "--out", "out"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert re.search(rf"^punl: lr: {message}; lower lr$", err.strip(), re.M), err
    assert "Traceback" not in err
    assert not list((workdir / "out/artifacts").glob("train-*/_complete.json"))


def test_a_run_that_learns_nothing_stops_and_is_never_marked_complete(workdir, capsys):
    """A weight decay that holds every weight at 0 leaves the model at chance: no rising loss,
    but nothing learned, so nothing to unlearn; training stops with one line instead."""
    argv = ["train", "digits-quick", "--set", "n_train=120", "--set", "runs=1", "--set",
            "epochs=1", "--set", "width=8", "--set", "batch_size=32", "--set",
            "weight_decay=19", "--set", "record_every=1", "--out", "out"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert re.search(r"^punl: training did not learn: the final test accuracy 0\.\d+ is at "
                     r"chance \(the commonest class is 0\.1\d+ of the test set; at most 0\.1\d+ "
                     r"is chance\)", err.strip(), re.M), err
    assert "Traceback" not in err
    assert not list((workdir / "out/artifacts").glob("train-*/_complete.json"))


@pytest.mark.parametrize("command", ["train", "run"])
def test_out_onto_a_folder_of_the_users_is_refused_and_nothing_is_deleted(workdir, capsys,
                                                                          command):
    """A folder punl did not create, even one with punl's names in it, is never written to."""
    mine = workdir / "mydir"
    (mine / "published").mkdir(parents=True)
    (mine / ".staging").mkdir()
    (mine / "published" / "precious.txt").write_text("keep")
    (mine / ".staging" / "notes.txt").write_text("keep")
    assert main([command, "digits-quick", "--out", str(mine)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("punl: configuration error: --out"), err
    assert ".staging/" in err[0] and "published/" in err[0]
    assert (mine / "published" / "precious.txt").read_text() == "keep"
    assert (mine / ".staging" / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in mine.iterdir()) == [".staging", "published"]


def test_punls_own_folders_are_marked_and_accepted(tmp_path):
    from punl.core.outputs import MARKER, foreign_entries, output_lock
    from punl.stages.preflight import check_output_folder
    new = tmp_path / "new"
    assert check_output_folder(new) == new and not new.exists()      # nothing created
    with output_lock(new):
        pass
    assert (new / MARKER).exists() and foreign_entries(new) == []
    (new / "notes.txt").write_text("a marked folder is punl's")
    assert foreign_entries(new) == []
    old = tmp_path / "old"                    # a run's folder from before folders were marked
    (old / "published").mkdir(parents=True)
    (old / "artifacts" / "train-0123456789ab").mkdir(parents=True)
    (old / "published" / "run.json").write_text('{"tables": {"scores.parquet": {}}}')
    (old / "published" / "scores.parquet").write_bytes(b"")
    assert foreign_entries(old) == []
    (old / "published" / "mine.csv").write_text("")
    assert foreign_entries(old) == ["published/"]
    with pytest.raises(ConfigError, match="^--out: .* holds published/"):
        check_output_folder(old)


class FakeClient:
    """A dask client's ``run`` over workers, each seeing the folder it is given through
    ``views`` (a worker on a private disk sees another folder of the same name)."""

    def __init__(self, views: dict):
        self.views = views

    def run(self, fn, folder, token):
        return {worker: fn(str(view or folder), token) for worker, view in self.views.items()}


def test_workers_that_share_the_folder_pass_and_leave_nothing(tmp_path):
    from punl.stages.preflight import workers_sharing_problems
    assert workers_sharing_problems(FakeClient({"tcp://a": None, "tcp://b": None}),
                                    tmp_path) == {}
    assert list(tmp_path.iterdir()) == []


def test_a_worker_on_a_private_disk_is_named(tmp_path):
    """The case that lost a sweep's results silently: the worker finished its points on its
    own disk. Without the probe's file it cannot read; with a copy of another token it reads
    another folder."""
    from punl.stages.preflight import PROBE, workers_sharing_problems
    private, stale = tmp_path / "private", tmp_path / "stale"
    private.mkdir()
    stale.mkdir()
    shared = tmp_path / "shared"
    shared.mkdir()

    class StaleCopy(FakeClient):
        """The stale worker's folder holds a probe of the same name with other contents."""

        def run(self, fn, folder, token):
            (stale / f"{PROBE}-{token}").write_text("another sweep's token")
            return super().run(fn, folder, token)

    problems = workers_sharing_problems(
        StaleCopy({"tcp://ok": None, "tcp://private": private, "tcp://stale": stale}), shared)
    assert set(problems) == {"tcp://private", "tcp://stale"}
    assert "No such file" in problems["tcp://private"]
    assert "another folder" in problems["tcp://stale"]
    assert list(shared.iterdir()) == []


def test_a_failing_client_leaves_no_probe(tmp_path):
    from punl.stages.preflight import workers_sharing_problems

    class Broken:
        def run(self, fn, folder, token):
            fn(folder, token)                # one worker answered, then the cluster failed
            raise OSError("connection lost")

    with pytest.raises(OSError):
        workers_sharing_problems(Broken(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_check_workers_share_needs_nothing_for_local_sweeps(tmp_path):
    from punl.stages.preflight import check_workers_share
    check_workers_share("local", tmp_path / "not-there", 1.0)
    assert list(tmp_path.iterdir()) == []


def test_chance_is_the_commonest_class_of_the_test_set():
    """On a test set that is 90% one class, 90% accuracy is what always answering that class
    scores: no evidence of learning."""
    from types import SimpleNamespace

    from punl.core.config import load_config
    from punl.stages.convergence import Diverged, check_learned
    ledger = SimpleNamespace(test_acc=np.full((4, 3), 0.9))
    skewed = np.array([0] * 900 + [1] * 100)
    with pytest.raises(Diverged, match="commonest class is 0.900"):
        check_learned(load_config("digits-quick"), ledger, skewed)
    check_learned(load_config("digits-quick"), ledger, np.arange(1000) % 10)   # balanced: learned
