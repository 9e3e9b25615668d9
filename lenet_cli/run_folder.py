"""What a run folder (a single run's, or a sweep job's) is, decided here and nowhere else: single
runs, `resume=`, SLURM restarts, sweep jobs and the sweep summary all ask this module. States:
running (a live process holds its claim), finished (metrics.json and no failure recorded),
stopped (checkpoints/last.ckpt of a run that did not fail, whatever stopped it: it continues from
there), failed (job_status.json records it: a rerun starts again), new (none of these).

Claims: `.claims/<n>.json`, n one more than the newest, is written whole beside it and linked into
place (link(2) fails when the name exists, atomic on network file systems too): of processes that
claim together, exactly one wins. Its owner is dead when, on this host, its process is gone (at
once; its start time guards against a reused pid); on another host, when the file was not renewed
(every RENEW_SECONDS) for LEASE_SECONDS: long enough that a busy file server or a paused VM does
not lose a live claim, short enough that a dead worker's job is taken over within minutes. A
restarted SLURM job takes over its earlier start's claim at once (SLURM runs one start at a time).
"""

from __future__ import annotations

import contextlib
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

import yaml

from lenet_cli.cluster import in_slurm_job, job_id, restart_count
from lenet_cli.console import short_path
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


def me() -> dict[str, Any]:
    """This process as a claim records it (slurm_job: <job id>:<restarts>, to tell starts apart)."""
    pid = os.getpid()
    job = f"{job_id()}:{restart_count()}" if in_slurm_job() else None
    host, started = socket.gethostname(), _process_start(pid)
    return {"host": host, "pid": pid, "started": started, "slurm_job": job, "since": time.time()}


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
        job, _, restarts = (self.slurm_job or "").rpartition(":")
        restarted = restarts.isdigit() and int(restarts) < restart_count()
        if in_slurm_job() and job == job_id() and restarted:
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
        threading.Thread(target=_renew_forever, args=(held,), daemon=True).start()
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

    @property
    def last_checkpoint(self) -> Path:
        return self.path / "checkpoints" / "last.ckpt"

    def status(self) -> dict[str, Any]:
        return read_json(self.path / STATUS_FILE)

    def metrics(self) -> dict[str, Any]:
        return read_json(self.path / METRICS_FILE)

    def record(self, status: dict[str, Any]) -> None:
        write_json_atomic(self.path / STATUS_FILE, status)

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

    def _newest(self) -> tuple[int, Owner | None]:
        """The newest claim's number (0: none) and its owner (None: see below)."""
        try:
            taken = [int(p.stem) for p in (self.path / CLAIMS).glob("*.json") if p.stem.isdigit()]
        except OSError:
            taken = []
        newest = max(taken, default=0)
        path = self.path / CLAIMS / f"{newest}.json"
        try:
            return newest, Owner(**read_json(path), renewed=path.stat().st_mtime)
        except (TypeError, OSError):
            return newest, None  # no claim, released meanwhile, or not one this module wrote

    def claim(self) -> Owner | None:
        """Claim the folder: None when it is now ours, else the live owner that holds it."""
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
        with contextlib.suppress(OSError):  # another claim came meanwhile
            (self.path / CLAIMS).rmdir()

    def out_of_space(self, error: OSError, resume: str) -> LenetError | None:
        """The panel of a write that failed for lack of space (a full disk, a quota, a read-only
        file system), None for any other OSError; `resume` continues the run once there is space."""
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
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.since))
        return f"{short_path(self.path)} is running in {owner.describe()} (since {since})."


def existing_job_folder(parent: Path, name: str, overrides: list[str]) -> Path | None:
    """A restarted job's unfinished run of the same command from its earlier start, under
    parent/<any date>/`name` (or `name-2` ...); none on a first start (job ids come round again)."""
    if restart_count() == 0:
        return None
    # What Hydra records in .hydra/overrides.yaml: the overrides, less Hydra's own settings.
    task_overrides = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    for folder in sorted([*parent.glob(f"*/{name}"), *parent.glob(f"*/{name}-*")], reverse=True):
        with contextlib.suppress(OSError, yaml.YAMLError):  # no records: not a run to continue
            recorded = yaml.safe_load((folder / ".hydra/overrides.yaml").read_text())
            if recorded == task_overrides and RunFolder(folder).state() != "finished":
                return folder
    return None
