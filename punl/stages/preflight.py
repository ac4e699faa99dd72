"""Every check that can be made from a configuration and its dataset's size, before any work.

:func:`preflight` reads how many training points the dataset offers (which also checks that its
files are present) and checks, up to the last stage a command runs:

- ``train``: ``n_train`` within the dataset, ``batch_size`` at most N (q = B / N <= 1), the
  device;
- ``score``: ``sigma > 0`` and a finite privacy loss from the accountant (sigma = 0 adds no
  noise, so the per-instance privacy loss is infinite and the scores are undefined);
- every stage: what the stages ask of the machine against stated limits
  (:func:`punl.stages.resources.check_resources`; ``--force`` runs past them);
- ``unlearn``: the forget groups fit (``n_groups * group_size <= N``, and the mixed held-out
  requests, :func:`punl.study.groups.mixed_fits`) and ``batch_size`` is below the retain set's size
  N - ``group_size`` (q < 1 when unlearning and retraining).

The configuration's own field checks (finite numbers, known names, score columns that the
scores table will have) run when it is built (:mod:`punl.core.config`); the command line's own
arguments are checked here too (:func:`check_folder`, :func:`check_workers`,
:func:`check_scheduler`). Each problem raises :class:`~punl.core.config.ConfigError` (or
:class:`~punl.engine.data.DatasetUnavailable`) with one line naming the field and the fix, before any
folder is created.
"""
from __future__ import annotations

import asyncio
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..core.config import STAGES, Config, ConfigError
from ..engine.data import available_training_points
from ..engine.recipe import resolve_device, total_steps
from .resources import check_resources

DASK_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")


def preflight(config: Config, through: str = "unlearn", device: bool = True) -> int:
    """Run every check for the stages up to ``through``; return the number of training
    points N. ``device=False`` leaves the device to the machines that run the stages."""
    if through not in STAGES:
        raise ValueError(f"through: {through!r} is not one of {STAGES}")
    n = training_points(config)
    if device:
        resolve_device(config.device)
    check_training(config, n)
    if STAGES.index(through) >= STAGES.index("score"):
        check_accounting(config, n)
    if through == "unlearn":
        check_groups(config, n)
    check_resources(config, n, through)
    return n


def training_points(config: Config) -> int:
    """N: ``n_train``, or every training point of the dataset; checks both against the data."""
    try:
        available = available_training_points(config.dataset, config.data_root,
                                               config.test_fraction, config.data_seed)
    except ValueError as err:
        raise ConfigError(f"test_fraction: {config.test_fraction} cannot split "
                          f"{config.dataset} ({err}); choose one that leaves every class in "
                          "both splits") from None
    if config.n_train is not None and config.n_train > available:
        raise ConfigError(f"n_train: {config.n_train} exceeds the {available} training points "
                          f"of {config.dataset}; use n_train <= {available} or null (all)")
    return available if config.n_train is None else config.n_train


def check_training(config: Config, n: int) -> None:
    """Poisson sampling needs q = B / N <= 1; the ledger needs a record after step 0 (the
    record interval at most T), or one record would stand for the whole run."""
    if config.batch_size > n:
        raise ConfigError(f"batch_size: {config.batch_size} exceeds the {n} training points "
                          f"(q = B / N must be <= 1); use batch_size <= {n}")
    steps, interval = total_steps(config, n), config.record_interval(n)
    if interval > steps:
        field = "record_every" if config.record_every is not None else "records_per_epoch"
        raise ConfigError(f"{field}: records every {interval} steps, more than the T = {steps} "
                          "training steps, so the ledger would hold step 0 alone; record more "
                          "often or train longer (epochs)")


def check_accounting(config: Config, n: int) -> None:
    """The accountant needs noise, and a finite privacy loss over the T training steps."""
    if config.sigma == 0:
        raise ConfigError("sigma: 0 adds no noise, so every point's privacy loss is infinite "
                          "and the privacy scores are undefined; use sigma > 0 (e.g. 0.5), or "
                          "`punl train` alone for noise-free training")
    from ..engine.privacy import sgm_rdp
    q, steps = config.batch_size / n, total_steps(config, n)
    try:
        finite = bool(np.isfinite(steps * sgm_rdp(q, config.sigma, config.orders)).all())
    except (ArithmeticError, ValueError):
        finite = False
    if not finite:
        raise ConfigError(f"sigma: {config.sigma:g} is too small for the privacy accountant "
                          f"(the privacy loss over {steps} steps at q = {q:.3g} is not a finite "
                          "number); use a larger sigma, e.g. 0.5")


def check_groups(config: Config, n: int) -> None:
    """Forget groups fit the training set and leave a retain set larger than a batch."""
    m, groups = config.group_size, config.n_groups
    if m * groups > n or m >= n:
        field = "n_groups" if groups > n else "group_size"
        raise ConfigError(f"{field}: {groups} groups of {m} points need {m * groups} of the "
                          f"{n} training points; lower group_size or n_groups")
    if config.heldout_requests:
        from ..study.groups import mixed_fits
        if not mixed_fits(n, m):
            raise ConfigError(f"heldout_requests: mixed requests of {m} points (most of them "
                              f"from the lower half of the {n} points, a few from the top tenth) "
                              "do not fit; lower group_size or set heldout_requests: 0")
    retain = n - m
    if config.batch_size >= retain:
        raise ConfigError(f"batch_size: {config.batch_size} is not below the {retain} points of "
                          f"a retain set (N - group_size), so q = B / |R| would reach 1; use "
                          f"batch_size < {retain}")


# ------------------------------------------------------------------------ command-line checks
def check_folder(path: str | Path, flag: str) -> Path:
    """A folder that is, or can be created as, a writable folder; returns it."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{flag}: {folder} is a file; give a folder")
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{flag}: {existing} is a file, so {folder} cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}: {existing} is not writable; give another folder")
    return folder


def check_output_folder(path: str | Path, flag: str = "--out") -> Path:
    """:func:`check_folder`, and a folder punl may write in: new, empty, or its own
    (:func:`punl.core.outputs.foreign_entries`); a run never deletes what it did not write."""
    from ..core.outputs import foreign_entries, misplaced_files
    folder = check_folder(path, flag)
    misplaced = misplaced_files(folder)
    if misplaced:
        raise ConfigError(f"{flag}: {folder / misplaced[0]} is a file where punl keeps a folder; "
                          f"move it away or give another {flag}")
    foreign = foreign_entries(folder)
    if foreign:
        shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4
                                          else "")
        raise ConfigError(f"{flag}: {folder} holds {shown}, which punl did not write; give a "
                          "new or empty folder (punl writes only in folders it created)")
    return folder


def check_workers(workers: int) -> None:
    if workers < 1:
        raise ConfigError(f"--workers: must be >= 1 (got {workers})")


def check_scheduler(address: str, timeout: float) -> None:
    """A dask scheduler address that parses and answers the dask handshake within ``timeout``
    seconds (``local`` needs nothing)."""
    if address == "local":
        return
    from distributed.comm.addressing import parse_address, parse_host_port
    try:
        scheme, location = parse_address(address)
        host, port = parse_host_port(location)
    except ValueError as err:
        raise ConfigError(f"--scheduler: {err}; give tcp://HOST:PORT or local") from None
    if scheme not in DASK_SCHEMES:
        raise ConfigError(f"--scheduler: unknown scheme {scheme!r} in {address!r}; give "
                          f"tcp://HOST:PORT or local")
    try:
        if scheme != "ucx":
            socket.create_connection((host, port), timeout=timeout).close()
        with ThreadPoolExecutor(1) as thread:    # its own event loop, whatever the caller runs
            thread.submit(asyncio.run, _handshake(address, timeout)).result()
    except Exception as err:  # noqa: BLE001 - whatever answers, it is not a usable scheduler
        reason = getattr(err, "strerror", None) or str(err)[:80] or type(err).__name__
        raise ConfigError(f"--scheduler: no dask scheduler answers at {address} within "
                          f"{timeout:g} s ({reason}); start `dask scheduler` there, or use "
                          "--scheduler local") from None


async def _handshake(address: str, timeout: float) -> None:
    from distributed.comm import connect

    async def connect_and_close():
        comm = await connect(address, timeout=timeout)
        await comm.close()

    await asyncio.wait_for(connect_and_close(), timeout)


# ------------------------------------------------------------------ dask workers see the folder
PROBE = ".punl-probe"


def _probe_from_worker(folder: str, token: str) -> str:
    """Run on a dask worker: read the client's probe ``folder/.punl-probe-<token>`` and answer
    with a file of its own beside it; returns that file's name, or what went wrong (prefixed
    ``problem: ``)."""
    import secrets
    try:
        if (Path(folder) / f"{PROBE}-{token}").read_text() != token:
            return "problem: it reads another folder of that name (its own filesystem)"
        answer = Path(folder) / f"{PROBE}-{token}-{secrets.token_hex(6)}"
        answer.write_text(token)
        return answer.name
    except (OSError, ValueError) as err:
        return f"problem: {getattr(err, 'strerror', None) or type(err).__name__}"


def workers_sharing_problems(client, folder: Path) -> dict[str, str]:
    """Each dask worker of ``client`` that cannot read and write ``folder`` as the client
    does, with why: the client writes a probe named by a fresh token (so that sweeps sharing a
    parent folder never meet), every worker reads it and writes an answer, and the client must
    see each answer. Leaves no file of the probe in ``folder``, whatever happens."""
    import secrets
    token = secrets.token_hex(8)
    probe = folder / f"{PROBE}-{token}"
    probe.write_text(token)
    try:
        answers = client.run(_probe_from_worker, str(folder), token)
        return {worker: (answer.removeprefix("problem: ") if answer.startswith("problem: ")
                         else "what it writes there does not reach the client")
                for worker, answer in answers.items()
                if answer.startswith("problem: ") or not (folder / answer).is_file()}
    finally:
        for leftover in folder.glob(f"{PROBE}-{token}*"):
            leftover.unlink(missing_ok=True)


def check_workers_share(address: str, folder: Path, timeout: float) -> None:
    """The dask scheduler at ``address`` has at least one worker within ``timeout`` seconds, and
    every worker connected reads and writes ``folder`` (its nearest existing parent: nothing
    is created); else one ConfigError naming the problem and the fix. Results travel through
    that folder, so a worker on a private disk would finish its points where the client never
    sees them. Workers that join after this check are not probed."""
    if address == "local":
        return
    from distributed import Client
    existing = next(p for p in [folder, *folder.parents] if p.is_dir())
    with Client(address, timeout=timeout) as client:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except Exception:  # noqa: BLE001 - dask raises its own TimeoutError types
            raise ConfigError(f"--scheduler: the dask scheduler at {address} has no worker "
                              f"within {timeout:g} s; start `dask worker {address}` on each "
                              "machine") from None
        problems = workers_sharing_problems(client, existing)
    if problems:
        worker, why = next(iter(sorted(problems.items())))
        raise ConfigError(
            f"--scheduler: worker {worker} cannot use {existing} ({why}; {len(problems)} of "
            f"the workers); every dask worker must read and write the sweep's --out folder: "
            f"give --out a folder on a filesystem all machines share (e.g. NFS)")
