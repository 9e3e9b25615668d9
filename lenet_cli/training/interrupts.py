"""Ctrl-C and SIGTERM: every process of a run stops at the same step, where nothing is half done.

A signal only sets a flag. Before each training batch is handed out (lenet_cli/training/
datamodule.py), the processes decide together whether any of them was signalled, and if so every
one raises Lightning's SIGTERMException there: the step before has finished (optimiser, schedule,
progress counters), the loader's position counts exactly the batches trained on, and the
checkpoint callback writes last.ckpt from that state (lenet_cli/training/callbacks/checkpoint.py).

Why not Lightning's own SIGTERM handling: in pytorch-lightning 2.6.6 its handler runs a
torch.distributed broadcast inside the signal handler and each process raises as soon as it has
seen the signal itself, so a DDP run interrupted by Ctrl-C (every process gets SIGINT) or by
SIGTERM hung in mismatched collectives with last.ckpt half agreed on (tests/test_distributed.py
shows it ends now). A single process takes the same path, so both are tested alike.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lenet_cli.cluster import in_slurm_job, job_id

_requested = False  # a signal asked this process to stop
_requeue = False  # ... and it was SLURM's warning (USR1): the job is to be requeued
# The handlers found by arm(), to give back; while it holds any, ours are installed for this
# fit and the collective check runs before each batch.
_previous: dict[int, Any] = {}


def _request_stop(signum: int, frame: Any) -> None:
    global _requested, _requeue
    _requested = True
    _requeue = _requeue or signum == signal.SIGUSR1
    if signum == signal.SIGINT:  # a second Ctrl-C stops right away, mid-step if need be
        signal.signal(signal.SIGINT, signal.default_int_handler)


def arm(first: bool = False) -> None:
    """Catch SIGINT and SIGTERM from now on. Called when the fit is set up (first=True) and again
    at the start of the sanity check and of training, because the trainer installs its own
    SIGTERM handler in between. Only the main thread can set signal handlers."""
    global _requested, _requeue
    if threading.current_thread() is not threading.main_thread():
        return
    if first:
        _requested = _requeue = False
    signals = [signal.SIGINT, signal.SIGTERM]
    if in_slurm_job():
        signals.append(signal.SIGUSR1)  # sbatch --signal=USR1@<seconds>, scancel --signal=USR1
    for signum in signals:
        if signum == signal.SIGINT and not first and _requested:
            continue  # after a first Ctrl-C, the second one stays Python's default
        previous = signal.signal(signum, _request_stop)
        _previous.setdefault(signum, previous)


def disarm() -> None:
    """Give the signals back to the handlers found by arm() (Callback.teardown)."""
    for signum, handler in list(_previous.items()):
        signal.signal(signum, handler)
        del _previous[signum]


def requested() -> bool:
    """Whether this process received Ctrl-C, SIGTERM or SLURM's warning during the fit."""
    return _requested


def requeue_requested() -> bool:
    """Whether the stop was SLURM's warning signal, after which the job requeues itself."""
    return _requeue


def requeue_job() -> tuple[bool, str]:
    """Requeue this SLURM job (`scontrol requeue`): it starts again with the same job id, and
    its run continues from last.ckpt in the same folder (lenet_cli/cluster.py). Returns whether
    it worked and what happened, for the panel."""
    import subprocess

    job = job_id()
    # SLURM ends the job's processes with SIGTERM once requeued: this one is done already.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    result = subprocess.run(
        ["scontrol", "requeue", job], capture_output=True, text=True, check=False
    )
    if result.returncode == 0:
        return True, f"SLURM job {job} requeued: it continues from last.ckpt when it starts again."
    return False, f"Requeuing SLURM job {job} failed: {(result.stderr or result.stdout).strip()}"


def stop_if_requested(trainer: pl.Trainer) -> None:
    """The collective check, made by every process before each training batch: if any of them
    was signalled, all raise SIGTERMException here, together."""
    if not _previous:
        return
    stop = _requested
    if trainer.world_size > 1:
        # On accelerators reading the decision makes the host wait for the device: there the
        # processes decide at the logging cadence (the same steps on every one of them).
        on_cpu = trainer.strategy.root_device.type == "cpu"
        if not on_cpu and trainer.global_step % max(1, trainer.log_every_n_steps):
            return
        stop = trainer.strategy.reduce_boolean_decision(stop, all=False)  # any process
    if stop:
        raise SIGTERMException
