"""Process-wide settings (the allocator, an inherited environment variable, the exit), applied
by the console commands in their own process only: a notebook calling `train(cfg)` keeps its own.
Each saves >= 2% of a training epoch in scripts/bench.py (part `measures`), or it goes."""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import sys
from typing import Any


def use_plain_cuda_check(strategy: Any) -> None:
    """Unset PYTORCH_NVML_BASED_CUDA_CHECK, which importing Lightning sets, unless the strategy
    forks (ddp_fork, ddp_notebook: no CUDA before the fork): with it torch's optimisers ask NVML
    every step (no driver: 5% of a LeNet step). Removed, not restored: children inherit it."""
    import lightning_fabric  # noqa: F401  (sets the variable on import: undo it after)

    if "fork" not in str(strategy) and "notebook" not in str(strategy):
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


def keep_freed_memory() -> None:
    """glibc: serve large tensors from the heap and keep freed memory mapped, so that a step
    reuses what the last one freed instead of faulting it back in (one LeNet epoch: 3.1-3.8 s
    instead of 3.7-6.2 s; up to 512 MB stays with the process after a peak). Not under MALLOC_*
    settings, a preloaded jemalloc/tcmalloc (their own tuning) or another libc."""
    env = os.environ
    if not sys.platform.startswith("linux") or "malloc" in env.get("LD_PRELOAD", ""):
        return
    if any(key.startswith("MALLOC_") for key in env):
        return
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl's mallopt does nothing)
    except (OSError, AttributeError):
        return
    libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD: glibc's maximum
    libc.mallopt(-1, 512 * 1024 * 1024)  # M_TRIM_THRESHOLD


# The code a finished command exits with (None: not finished yet), by the process that registered
# the handler: a forked child inherits the handler, but not the command's end.
_exit_codes: dict[int, int | None] = {}


def _exit_without_teardown() -> None:
    # Registered before any library's exit handler but logging's, so it runs after all of them:
    # atexit calls handlers in the reverse order of registration (and only after the
    # interpreter has joined every non-daemon thread). logging's own is called here instead.
    code = _exit_codes.get(os.getpid())
    if code is not None:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def skip_teardown_at_exit() -> None:
    """End a finished command without the interpreter's teardown of torch and Lightning (about
    1.7 s). Call it first thing, then `exit_quickly(code)` once the command ended as it meant to;
    exit handlers registered later still run (tests/test_speed_measures.py checks it)."""
    if os.getpid() not in _exit_codes:
        atexit.register(_exit_without_teardown)
    _exit_codes[os.getpid()] = None


def exit_quickly(code: int = 0) -> None:
    """The command has ended with `code`: skip_teardown_at_exit's handler, if registered, ends
    the process with it once every other exit handler has run."""
    if os.getpid() in _exit_codes:
        _exit_codes[os.getpid()] = code
