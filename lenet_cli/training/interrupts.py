"""Ctrl-C, SIGTERM and SLURM's signals: every process of a run stops at the same step, where
nothing is half done.

A signal only sets a flag. Before each training batch (datamodule.py) the processes decide
together whether any was signalled; if so all raise Lightning's SIGTERMException there, after a
whole step, and RunCheckpoint writes last.ckpt from that state.

Why not Lightning's own SIGTERM handling (pytorch-lightning 2.6.6): its handler runs a
torch.distributed broadcast inside the signal handler and each process raises as soon as it has
seen the signal itself, so an interrupted DDP run hung in mismatched collectives (see
tests/test_distributed.py). submitit's time-limit signal (SIGUSR2) stops the run the same way,
then goes on to submitit's handler, which requeues the job (its checkpoint() saves no state).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lenet_cli.cluster import in_slurm_job, job_id, slurm

_caught: set[int] = set()  # the signals that asked this process to stop during this fit
# The handlers found by arm(), to give back; while it holds any, ours are installed for this
# fit and the collective check runs before each batch.
_previous: dict[int, Any] = {}


def _request_stop(signum: int, frame: Any) -> None:
    _caught.add(signum)
    if signum == signal.SIGINT:  # a second Ctrl-C stops right away, mid-step if need be
        signal.signal(signal.SIGINT, signal.default_int_handler)


def arm(first: bool = False) -> None:
    """Catch SIGINT and SIGTERM from now on. Called when the fit is set up (first=True) and again
    at the start of the sanity check and of training, because the trainer installs its own
    SIGTERM handler in between. Only the main thread can set signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        return
    if first:
        _caught.clear()
    signals = [signal.SIGINT, signal.SIGTERM]
    if in_slurm_job():
        signals.append(signal.SIGUSR1)  # sbatch --signal=USR1@<seconds>, scancel --signal=USR1
        if callable(signal.getsignal(signal.SIGUSR2)):  # submitit's handler of its time limit
            signals.append(signal.SIGUSR2)
    for signum in signals:
        if signum == signal.SIGINT and not first and _caught:
            continue  # after a first Ctrl-C, the second one stays Python's default
        previous = signal.signal(signum, _request_stop)
        _previous.setdefault(signum, previous)


def disarm() -> None:
    """Give the signals back to the handlers found by arm() (lenet-train's fit, however it
    ended); submitit's time-limit signal, caught meanwhile, goes on to its handler now."""
    for signum in list(_previous):
        signal.signal(signum, _previous.pop(signum))
    if signal.SIGUSR2 in _caught:
        _caught.discard(signal.SIGUSR2)
        # submitit requeues and exits (SystemExit); out of requeues (max_num_timeout) it raises
        # an error instead, and this run's own stop stands: last.ckpt and the Interrupted panel.
        with contextlib.suppress(Exception):
            signal.raise_signal(signal.SIGUSR2)


def requested() -> bool:
    """Whether this process received Ctrl-C, SIGTERM or a SLURM signal during the fit."""
    return bool(_caught)


def requeue_if_asked() -> tuple[bool, str | None]:
    """After SLURM's warning signal, requeue this job (`scontrol requeue`): it starts again with
    the same job id and continues from last.ckpt in its folder. Returns whether it worked and
    what happened (None without that signal)."""
    if signal.SIGUSR1 not in _caught:
        return False, None
    job = job_id()
    # SLURM ends the job's processes with SIGTERM once requeued: this one is done already.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    requeued, said = slurm("scontrol", "requeue", job)
    if requeued:
        return True, f"SLURM job {job} requeued: it continues from last.ckpt when it starts again."
    return False, f"Requeuing SLURM job {job} failed: {said}"


def stop_if_requested(trainer: pl.Trainer) -> None:
    """The collective check, made by every process before each training batch: if any of them
    was signalled, all raise SIGTERMException here, together."""
    if not _previous:
        return
    stop = bool(_caught)
    if trainer.world_size > 1:
        # On accelerators reading the decision makes the host wait for the device: there the
        # processes decide at the logging cadence (the same steps on every one of them).
        on_cpu = trainer.strategy.root_device.type == "cpu"
        if not on_cpu and trainer.global_step % max(1, trainer.log_every_n_steps):
            return
        stop = trainer.strategy.reduce_boolean_decision(stop, all=False)  # any process
    if stop:
        raise SIGTERMException
