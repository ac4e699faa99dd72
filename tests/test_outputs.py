"""The output contract's parts: swaps, recovery, verified cache entries and records, chapter
and point names, the lock, and workers that die with their parent."""
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import numpy as np
import pytest

from punl.core import outputs
from punl.core.config import load_config
from punl.core.outputs import Publication, StagedFolder, read_published, recover, swap_in
from punl.stages.pipeline import run_folder, run_name
from punl.core.store import COMPLETE, CorruptArtifact, StageDir
from punl.commands.sweep import grid_points, point_name, value_slug

REPO = Path(__file__).resolve().parent.parent


def folder_with(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "a.txt").write_text(text)
    return path


@pytest.mark.parametrize("can_exchange", [True, False], ids=["exchange", "rename-aside"])
def test_swap_in_replaces_the_folder_whole(tmp_path, monkeypatch, can_exchange):
    if not can_exchange:
        monkeypatch.setattr(outputs, "exchange", lambda a, b: False)
    target = folder_with(tmp_path / "published", "old")
    (target / "only-old.txt").write_text("x")
    swap_in(folder_with(tmp_path / ".staging", "new"), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["published"]
    assert [p.name for p in target.iterdir()] == ["a.txt"]
    assert (target / "a.txt").read_text() == "new"


def test_a_swap_cut_between_its_renames_recovers_the_old_folder(tmp_path):
    target = folder_with(tmp_path / "published", "old")
    os.rename(target, outputs.aside(target))          # killed after the first rename
    assert not target.exists()
    recover(target)
    assert (target / "a.txt").read_text() == "old" and not outputs.aside(target).exists()


def test_staged_folder_begins_empty_and_commits(tmp_path):
    staged = StagedFolder(tmp_path / "chapter", tmp_path / ".staging-chapter")
    (folder_with(tmp_path / ".staging-chapter", "left by a killed run") / "junk").write_text("")
    folder = staged.begin()
    assert list(folder.iterdir()) == []
    (folder / "index.md").write_text("# new")
    assert staged.commit() == tmp_path / "chapter"
    assert [p.name for p in tmp_path.iterdir()] == ["chapter"]


def test_published_tables_are_read_only_when_they_match_run_json(tmp_path):
    pub = Publication(tmp_path)
    pub.begin()
    pub.write_record({"tables": pub.write_tables({"scores": pd.DataFrame({"x": [1, 2]})})})
    pub.commit()
    assert read_published(tmp_path, "scores").x.tolist() == [1, 2]
    path = tmp_path / "published/scores.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert read_published(tmp_path, "scores") is None
    assert read_published(tmp_path, "steps") is None


def test_every_file_a_stage_folder_writes_is_verified_when_read(tmp_path):
    sd = StageDir(tmp_path)
    sd.save_bytes("runs/run0.pt", b"0123456789")
    assert sd.read_verified("runs/run0.pt") == b"0123456789"
    assert sd.digest_file("runs/run0.pt") == tmp_path / "runs/.run0.pt.sha256"
    sd.file("runs/run0.pt").write_bytes(b"0123456780")
    with pytest.raises(CorruptArtifact, match="SHA-256"):
        sd.read_verified("runs/run0.pt")
    for digest in ("{", "[]", "{}", '{"size": 10}'):
        sd.digest_file("runs/run0.pt").write_text(digest)
        with pytest.raises(CorruptArtifact):
            sd.read_verified("runs/run0.pt")
    sd.digest_file("runs/run0.pt").unlink()
    with pytest.raises(CorruptArtifact, match="no digest record"):
        sd.read_verified("runs/run0.pt")
    with pytest.raises(CorruptArtifact, match="unreadable"):
        sd.read_verified("runs/run1.pt")


def test_a_stage_file_without_its_own_digest_is_checked_against_the_record(tmp_path):
    sd = StageDir(tmp_path)
    sd.save_bytes("ledger.npz", b"ledger")
    sd.mark_complete({"key": "k"})
    sd.digest_file("ledger.npz").unlink()          # a folder written before digests beside files
    assert sd.read_verified("ledger.npz") == b"ledger"


@pytest.mark.parametrize("record", ['{"files": {}, "key": "k"}', '{"files": [], "key": "k"}',
                                    "{", "[]", '{"files": {"a": {"size": 1}}, "key": "k"}',
                                    '{"files": {"../a": {"size": 1, "sha256": "x"}}, "key": "k"}'])
def test_a_malformed_record_means_incomplete_never_an_error(tmp_path, record):
    sd = StageDir(tmp_path)
    sd.save_bytes("a", b"x")
    sd.file(COMPLETE).write_text(record)
    assert not sd.is_complete("k", ("a",))


def test_a_record_must_name_its_key_and_required_files(tmp_path):
    sd = StageDir(tmp_path)
    sd.save_bytes("a", b"x")
    sd.mark_complete({"key": "k"})
    assert sd.is_complete("k", ("a",))
    assert not sd.is_complete("other", ("a",)) and not sd.is_complete("k", ("a", "b"))


def test_runs_with_different_overrides_or_outputs_get_different_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = load_config("digits-quick")
    same = load_config("digits-quick", ["sigma=0.5", "workers=1"])   # the file's value; runtime
    assert run_name(base, base) == run_name(same, base) == "digits-quick"
    assert run_name(base, base, "runs/digits-quick") == "digits-quick"
    assert run_folder(base, None, base) == Path("runs/digits-quick")
    a = load_config("digits-quick", ["sigma=0.3"])
    a2 = load_config("digits-quick", ["sigma=.3"])
    b = load_config("digits-quick", ["sigma=0.3", "label_noise=0.05"])
    names = {run_name(a, base), run_name(b, base), run_name(a, base, "runs/my-run"),
             run_name(base, base, "runs/my-run"), run_name(base, base)}
    assert len(names) == 5 and run_name(a2, base) == run_name(a, base)
    assert all(n.startswith("digits-quick") for n in names)
    assert run_folder(a, None, base) == Path("runs") / run_name(a, base)


TRICKY = [1, -1, "1", "-1", 0.1, -0.1, 1e-5, "1e-05", [2, 8], [2, -8], "2_8", "m1", "a_b",
          "a-b", "a b", None, "null", "..", ".5", "x" * 80, "x" * 81, True, "true"]


def test_value_slugs_are_distinct_and_safe():
    slugs = [value_slug(v) for v in TRICKY]
    assert len(set(slugs)) == len(TRICKY), dict(zip(map(str, TRICKY), slugs))
    assert value_slug(0.5) == "0.5" and value_slug("cifar10") == "cifar10"
    assert value_slug(-1).startswith("m1_")
    for slug in slugs:
        assert "/" not in slug and ".." not in slug and "-" not in slug


def test_grid_points_get_distinct_folders_with_negative_numbers():
    points = grid_points("q", {"seed": [1, -1], "lr": [0.1, 1e-05]})
    names = [p["point"] for p in points]
    assert len(set(names)) == 4
    assert all(len(n) <= 100 and "/" not in n and ".." not in n for n in names)
    long = point_name("q" * 90, {"orders": [2, 4, 8, 16, 32]})
    assert len(long) == 100 and long != point_name("q" * 90, {"orders": [2, 4, 8, 16, 64]})


LOCK_SCRIPT = """
import sys
from punl.core.outputs import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
"""


def test_a_second_user_of_an_output_folder_waits_and_says_so(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with outputs.output_lock(tmp_path / "out"):
        proc = subprocess.Popen([sys.executable, "-c", LOCK_SCRIPT, str(tmp_path / "out")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        message = proc.stderr.readline()
        assert "is in use by pid" in message and "waiting" in message
        time.sleep(0.5)
        assert proc.poll() is None
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.strip() == "locked"


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with outputs.output_lock(tmp_path), outputs.output_lock(tmp_path):
        assert "pid" in (tmp_path / ".lock").read_text()


POOL_SCRIPT = """
import time
from punl.core.parallel import process_pool
pool = process_pool(2)
busy = [pool.submit(time.sleep, 600) for _ in range(2)]   # two workers, each sleeping
while len(pool._processes) < 2:
    time.sleep(0.05)
time.sleep(1)
print(" ".join(map(str, sorted(pool._processes))), flush=True)
time.sleep(600)
"""


def _parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[1])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads /proc")
def test_workers_die_with_their_parent():
    """Killing the process that made a pool ends its workers and the fork server they were
    forked from (their OS parent), which nothing else holds."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    parent = subprocess.Popen([sys.executable, "-c", POOL_SCRIPT], stdout=subprocess.PIPE,
                              text=True, env=env)
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert len(workers) == 2 and all(map(_alive, workers))
    others = {_parent_pid(w) for w in workers} - {parent.pid}   # the fork server, if any
    assert len(others) == ("forkserver" in multiprocessing.get_all_start_methods())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    left = workers + sorted(others)
    deadline = time.time() + 30   # a worker still importing exits when it finds no parent
    while any(map(_alive, left)) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(map(_alive, left))


def _allocate_and_touch(megabytes: int) -> tuple[float, float]:
    """This worker's resident set before it touched ``megabytes`` (VmRSS: its peak before may
    lie higher, from memory since freed, and then the new peak rises by less than
    ``megabytes``) and its peak resident set after (VmHWM)."""
    from punl.core.parallel import resident_peak_bytes
    status = Path(f"/proc/{os.getpid()}/status").read_text()
    before = float(re.search(r"^VmRSS:\s*(\d+) kB", status, re.M).group(1)) * 1024
    assert int(np.ones(megabytes * 2**20 // 8).sum()) == megabytes * 2**17
    return before, resident_peak_bytes(os.getpid())


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads /proc")
def test_a_pools_worker_peak_memory_is_recorded_when_it_shuts_down(monkeypatch):
    """A worker that touched 300 MB more shows its whole peak in the run record's worker
    peak, although the fork server's workers are not this process's children."""
    from punl.commands.runner import peak_memory_bytes
    from punl.core import parallel
    monkeypatch.setattr(parallel, "_worker_peak_bytes", 0.0)
    with parallel.process_pool(2) as pool:
        (before, after), _ = pool.map(_allocate_and_touch, [300, 1])
    # the 300 MB are resident together with what was resident before (4 MB of slack: the
    # allocator may hand back a few freed pages while the array is filled)
    assert after >= before + 296 * 2**20
    assert parallel.worker_peak_bytes() >= after
    assert peak_memory_bytes()["workers"] >= after


TIED_SCRIPT = """
import sys
from punl.core.parallel import run_tied
run_tied([sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(60)"])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG)")
def test_a_command_punl_runs_dies_with_it():
    """What `punl book` runs (jupyter-book) ends when punl is killed, as its workers do."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    parent = subprocess.Popen([sys.executable, "-c", TIED_SCRIPT], stdout=subprocess.PIPE,
                              text=True, env=env)
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while _alive(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def _published_run(folder, config):
    """A published run.json of ``config`` in ``folder`` (what punl run leaves)."""
    from punl.core.config import STAGES
    (folder / "published").mkdir(parents=True)
    (folder / "published" / "run.json").write_text(json.dumps({
        "config": config.to_dict(), "stage_keys": {s: config.stage_key(s) for s in STAGES},
        "plan": {"overrides": ["sigma=0.3", "n_train=200"]}}))


def test_a_notebook_opened_on_a_run_of_other_settings_is_refused(tmp_path):
    """Re-running a notebook by hand (papermill) without the run's overrides would compute
    another configuration into the finished run's folder: it is refused, naming what differs
    and the overrides to pass."""
    from punl.core.config import ConfigError, load_config
    from punl.publish.notebook import open_run
    _published_run(tmp_path / "run", load_config("digits-quick", ["sigma=0.3", "n_train=200"]))
    view = open_run("digits-quick", ["sigma=0.3", "n_train=200", "num_threads=2"],
                    str(tmp_path / "run"))         # runtime fields may differ
    assert view.out_dir == tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        open_run("digits-quick", [], str(tmp_path / "run"))
    message = str(err.value)
    assert message.startswith("out_dir: ") and "n_train, sigma differ" in message
    assert """-y 'overrides: ["sigma=0.3", "n_train=200"]'""" in message


def test_a_notebook_opened_with_other_analysis_settings_is_refused(tmp_path):
    """An analysis field (``law_simulations``) is in no stage key, yet the claims a notebook
    shows depend on it: opened without the run's value, the folder is refused."""
    from punl.core.config import ConfigError, load_config
    from punl.publish.notebook import open_run
    _published_run(tmp_path / "run", load_config("digits-quick", ["law_simulations=20"]))
    assert open_run("digits-quick", ["law_simulations=20"], str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="law_simulations differ"):
        open_run("digits-quick", [], str(tmp_path / "run"))


def test_a_run_in_progress_opens_its_own_folder(tmp_path):
    """punl run records the settings it is running in the staging folder before any notebook
    opens the folder, so a new run into a folder of an older run is not refused."""
    from punl.core.config import ConfigError, load_config
    from punl.core.outputs import output_lock
    from punl.publish.notebook import open_run
    _published_run(tmp_path / "run", load_config("digits-quick", ["sigma=0.3", "n_train=200"]))
    new = load_config("digits-quick", ["sigma=0.5"])
    staging = tmp_path / "run" / ".staging"
    staging.mkdir()
    (staging / "run.json").write_text(json.dumps({
        "config": new.to_dict(), "stage_keys": {s: new.stage_key(s) for s in
                                                ("train", "score", "pointwise", "unlearn")}}))
    with output_lock(tmp_path / "run"):                  # the run holds its folder
        assert open_run("digits-quick", ["sigma=0.5"], str(tmp_path / "run")).config.sigma == 0.5
    # once no run holds the folder, what a killed run left in staging proves nothing
    with pytest.raises(ConfigError, match="sigma differ"):
        open_run("digits-quick", ["sigma=0.5"], str(tmp_path / "run"))


def test_a_lock_held_by_another_process_is_seen(tmp_path):
    from punl.core.outputs import lock_in_use
    assert not lock_in_use(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from punl.core.outputs import output_lock\n"
        f"with output_lock({str(tmp_path)!r}):\n    print('held', flush=True); time.sleep(30)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock_in_use(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert not lock_in_use(tmp_path)
