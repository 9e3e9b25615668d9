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

_requested = False  # a signal asked this process to stop
_armed = False  # handlers installed for this fit: the collective check runs before each batch
_previous: dict[int, Any] = {}


def _request_stop(signum: int, frame: Any) -> None:
    global _requested
    _requested = True
    if signum == signal.SIGINT:  # a second Ctrl-C stops right away, mid-step if need be
        signal.signal(signal.SIGINT, signal.default_int_handler)


def arm(first: bool = False) -> None:
    """Catch SIGINT and SIGTERM from now on. Called when the fit is set up (first=True) and again
    at the start of the sanity check and of training, because the trainer installs its own
    SIGTERM handler in between. Only the main thread can set signal handlers."""
    global _armed, _requested
    if threading.current_thread() is not threading.main_thread():
        return
    if first:
        _requested = False
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signum == signal.SIGINT and not first and _requested:
            continue  # after a first Ctrl-C, the second one stays Python's default
        previous = signal.signal(signum, _request_stop)
        _previous.setdefault(signum, previous)
    _armed = True


def disarm() -> None:
    """Give the signals back to the handlers found by arm() (Callback.teardown)."""
    global _armed
    _armed = False
    for signum, handler in list(_previous.items()):
        signal.signal(signum, handler)
        del _previous[signum]


def requested() -> bool:
    """Whether this process received Ctrl-C or SIGTERM during the fit."""
    return _requested


def stop_if_requested(trainer: pl.Trainer) -> None:
    """The collective check, made by every process before each training batch: if any of them
    was signalled, all raise SIGTERMException here, together."""
    if not _armed:
        return
    stop = _requested
    if trainer.world_size > 1:
        stop = trainer.strategy.reduce_boolean_decision(stop, all=False)  # any process
    if stop:
        raise SIGTERMException
