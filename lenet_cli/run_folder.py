"""What a run folder is, decided here and nowhere else: single runs, `resume=`, SLURM restarts,
sweep jobs and the sweep summary all ask this module. A run folder (a single run's, or one
job's of a sweep) is in one of these states:

- running: a live process holds its claim (which process, on which host, is recorded);
- finished: it wrote metrics.json and no failure was recorded;
- stopped: it holds checkpoints/last.ckpt of a run that did not fail (a signal, a fault, a
  preemption, a kill -9): it continues from there;
- failed: job_status.json records the failure (a rerun starts from the beginning);
- new: none of these (never started, or stopped before its first checkpoint).

Claims. A process that runs in a folder first claims it: it creates `.claims/<n>.json`, n one
more than the newest claim there, written whole beside it and then linked into place (link(2)
fails when the name exists, atomic on network file systems too). Its owner is dead when, on
this host, its process is gone (at once; the process's start time guards against a reused pid),
or, on another host, when the file has not been renewed for LEASE_SECONDS (a daemon thread
renews it every RENEW_SECONDS while the owner runs: long enough that a busy file server or a
paused VM does not lose a live claim, short enough that a dead worker's job is taken over within
minutes). A restarted SLURM job also takes over its own earlier claim at once (SLURM runs one
instance of a job at a time). Taking over a dead claim creates claim n+1: when two processes try
together, exactly one of them wins.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lenet_cli.cluster import in_slurm_job, job_id, restart_count
from lenet_cli.errors import DiskFull, LenetError
from lenet_cli.files import write_json_atomic

STATUS_FILE = "job_status.json"  # a sweep job's record: ok, failed (with why), interrupted
METRICS_FILE = "metrics.json"
CLAIMS = ".claims"
LEASE_SECONDS = 300
RENEW_SECONDS = 30


def read_json(path: Path) -> dict[str, Any]:
    """A small JSON record, or {} when it is missing or damaged."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _process_start(pid: int) -> str | None:
    """When a process started (Linux: clock ticks since boot), to tell a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _slurm_job() -> str | None:
    """<job id>:<restarts> inside a SLURM job: a claim of this job's earlier start is dead."""
    return f"{job_id()}:{restart_count()}" if in_slurm_job() else None


def me() -> dict[str, Any]:
    """This process as a claim records it."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _process_start(pid),
            "slurm_job": _slurm_job(), "since": time.time()}  # fmt: skip


@dataclass
class Owner:
    host: str
    pid: int
    started: str | None
    slurm_job: str | None
    since: float
    renewed: float  # the claim file's modification time

    def is_me(self) -> bool:
        return self.host == socket.gethostname() and self.pid == os.getpid()

    def alive(self) -> bool:
        job, now = (self.slurm_job or ":").rsplit(":", 1), (_slurm_job() or ":").rsplit(":", 1)
        if job[0] and job[0] == now[0] and job[1].isdigit() and int(job[1]) < int(now[1]):
            return False  # this SLURM job started again: its earlier start is over
        if self.host != socket.gethostname():
            return time.time() - self.renewed < LEASE_SECONDS
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process: it exists
        return self.started is None or _process_start(self.pid) in (None, self.started)

    def describe(self) -> str:
        return f"process {self.pid} on {self.host}"


# This module's own bookkeeping: the claim files this process holds, renewed by one daemon thread
# so that other hosts see them alive (by pid: a forked child has no thread, and starts its own).
_held: dict[int, set[Path]] = {}


def _renew(path: Path, keep: bool) -> None:
    held = _held.get(os.getpid())
    if held is None:
        held = _held[os.getpid()] = set()
        threading.Thread(target=_renew_forever, args=(held,), name="lenet-claim-renewal",
                         daemon=True).start()  # fmt: skip
    (held.add if keep else held.discard)(path)


def _renew_forever(held: set[Path]) -> None:
    while True:
        time.sleep(RENEW_SECONDS)
        for path in list(held):
            try:
                os.utime(path)
            except OSError:
                held.discard(path)


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # -- records ---------------------------------------------------------------------------
    @property
    def last_checkpoint(self) -> Path:
        return self.path / "checkpoints" / "last.ckpt"

    def status(self) -> dict[str, Any]:
        return read_json(self.path / STATUS_FILE)

    def metrics(self) -> dict[str, Any]:
        return read_json(self.path / METRICS_FILE)

    def record(self, status: dict[str, Any]) -> None:
        write_json_atomic(self.path / STATUS_FILE, status)

    # -- state -----------------------------------------------------------------------------
    def owner(self) -> Owner | None:
        """The process that holds the newest claim (alive or not), None when unclaimed."""
        return self._newest()[1]

    def _other_owner(self) -> Owner | None:
        owner = self.owner()
        return owner if owner is not None and owner.alive() and not owner.is_me() else None

    def state(self) -> str:
        """running, finished, failed, stopped or new (see the module's docstring)."""
        status = self.status().get("status")
        if (self.path / METRICS_FILE).is_file() and status != "failed":
            return "finished"
        if self._other_owner() is not None:
            return "running"
        if status == "failed":
            return "failed"
        return "stopped" if self.last_checkpoint.is_file() else "new"

    def continue_from(self) -> Path | None:
        """The last.ckpt of a stopped run (not of one that failed, which starts again)."""
        return self.last_checkpoint if self.state() == "stopped" else None

    # -- claims ----------------------------------------------------------------------------
    def _newest(self) -> tuple[int, Owner | None]:
        """The newest claim's number (0: none) and its owner (None: see below)."""
        try:
            numbers = [int(p.stem) for p in (self.path / CLAIMS).glob("*.json")
                       if p.stem.isdigit()]  # fmt: skip
        except OSError:
            numbers = []
        newest = max(numbers, default=0)
        path = self.path / CLAIMS / f"{newest}.json"
        data = read_json(path)
        try:
            claim = {k: data[k] for k in ("host", "pid", "started", "slurm_job", "since")}
            return newest, Owner(**claim, renewed=path.stat().st_mtime)
        except (KeyError, OSError):
            return newest, None  # no claim, released meanwhile, or not one this module wrote

    def claim(self) -> Owner | None:
        """Claim the folder for this process. Returns None when it is now ours, else the live
        owner that holds it."""
        while True:
            # One look at the newest claim decides: the next number is claimed only if the
            # owner of the very claim looked at is dead (or it was none).
            newest, owner = self._newest()
            if owner is not None and owner.alive():
                return None if owner.is_me() else owner
            path = self.path / CLAIMS / f"{newest + 1}.json"
            mine = path.with_suffix(f".{secrets.token_hex(8)}.tmp")  # unique across hosts
            write_json_atomic(mine, me())
            try:
                os.link(mine, path)
            except FileExistsError:
                continue  # another process took it first: look again
            finally:
                mine.unlink(missing_ok=True)
            _renew(path, keep=True)
            return None

    def adopt(self) -> None:
        """A sweep job started by the process that claimed its folder (a joblib worker, a SLURM
        job): the claim passes to the job's own process, which lives as long as the job does."""
        newest, owner = self._newest()
        if newest == 0:
            self.claim()
        elif owner is None or not owner.is_me():
            path = self.path / CLAIMS / f"{newest}.json"
            write_json_atomic(path, me())
            _renew(path, keep=True)

    def release(self) -> None:
        """Give the claim up (the run ended, whatever the outcome), unless another live process
        holds it now: a SLURM or joblib job that took it over and still runs keeps it."""
        if self._other_owner() is not None:
            return
        for path in (self.path / CLAIMS).glob("*.json"):
            _renew(path, keep=False)
            path.unlink(missing_ok=True)
        try:
            (self.path / CLAIMS).rmdir()
        except OSError:
            pass

    def out_of_space(self, error: OSError, resume: str) -> LenetError | None:
        """The panel of a write that failed for lack of space (a full disk, a quota, a file
        system remounted read-only), None for any other OSError. `resume`: the command that
        continues this run once there is space."""
        from lenet_cli.console import short_path  # rich: only when a panel is shown

        if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            return None
        what = short_path(error.filename or self.path)
        last = self.last_checkpoint
        if last.is_file():
            size = f"{last.stat().st_size / 1e6:.1f} MB"
            kept = f"The last good checkpoint is {short_path(last)} ({size}; a run keeps two)."
        else:
            kept = "No checkpoint was written yet: it starts again from the beginning."
        return DiskFull(
            f"A write to {what} failed: {error.strerror}. Nothing written before is lost. {kept}",
            fix=f"Free some space under {short_path(self.path)}, then continue with:\n  {resume}",
        )

    def busy_message(self, owner: Owner) -> str:
        from lenet_cli.console import short_path  # rich: only when a panel is shown

        return (f"{short_path(self.path)} is running in {owner.describe()} (since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(owner.since))}).")  # fmt: skip


def existing_job_folder(parent: Path, name: str, overrides: list[str]) -> Path | None:
    """A restarted job's run from its earlier start (on any date) under parent/<date>/: a
    folder of this job (`name`, `name-2`, ...) that ran the same command and did not finish.
    On a first start there is none to find (and job ids can come round again)."""
    if restart_count() == 0:
        return None
    import yaml

    # What Hydra records in .hydra/overrides.yaml: the overrides, less Hydra's own settings.
    task_overrides = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    for folder in sorted([*parent.glob(f"*/{name}"), *parent.glob(f"*/{name}-*")], reverse=True):
        try:
            same = yaml.safe_load((folder / ".hydra/overrides.yaml").read_text()) == task_overrides
        except (OSError, yaml.YAMLError):
            continue
        if same and RunFolder(folder).state() != "finished":
            return folder
    return None
