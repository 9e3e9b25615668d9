"""Process-wide settings (the allocator, an inherited environment variable, the exit), applied
by the console commands in their own process only: a notebook calling `train(cfg)` keeps its own.
Each saves >= 2% of a training epoch in scripts/bench.py (part `measures`), or it goes.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any


def use_plain_cuda_check(strategy: Any) -> None:
    """Unset PYTORCH_NVML_BASED_CUDA_CHECK, which importing Lightning sets, unless the strategy
    forks (ddp_fork, ddp_notebook: no CUDA before the fork). With it torch's optimisers ask NVML
    every step (without a driver, 5% of a LeNet step). Removed, not restored: children inherit it.
    """
    text = str(strategy)
    if "fork" not in text and "notebook" not in text:
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


def keep_freed_memory() -> bool:
    """glibc: serve large tensors from the heap and keep freed memory mapped, so that a step
    reuses what the last one freed instead of faulting it back in (one LeNet epoch: 3.1-3.8 s
    instead of 3.7-6.2 s; up to 512 MB stays with the process after a peak). Returns whether
    applied: not under MALLOC_* settings, a preloaded jemalloc/tcmalloc or another libc."""
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    if "malloc" in os.environ.get("LD_PRELOAD", ""):  # jemalloc, tcmalloc: their own tuning
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl's mallopt does nothing)
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    mmap_ok = libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)  # glibc's maximum
    trim_ok = libc.mallopt(m_trim_threshold, 512 * 1024 * 1024)
    return bool(mmap_ok and trim_ok)


def tune_process(strategy: Any) -> None:
    """Apply the settings above to this process (called by the console entry point)."""
    import lightning_fabric  # noqa: F401  (sets the NVML variable on import: undo it after)

    keep_freed_memory()
    use_plain_cuda_check(strategy)


_exit_code: int | None = None  # set once the command has finished (see exit_quickly)
_registered_in: int | None = None  # the process that registered the handler


def _exit_without_teardown() -> None:
    # Registered before any library's exit handler but logging's, so it runs after all of them:
    # atexit calls handlers in the reverse order of registration (and only after the
    # interpreter has joined every non-daemon thread). logging's own is called here instead.
    if _exit_code is None or _registered_in != os.getpid():
        return
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_code)


def skip_teardown_at_exit() -> None:
    """End a finished command without the interpreter's teardown of torch and Lightning (about
    1.7 s). Call it first thing, then `exit_quickly(code)` once the command ended as it meant to;
    exit handlers registered later still run (tests/test_speed_measures.py checks it)."""
    import atexit

    global _exit_code, _registered_in
    _exit_code = None
    if _registered_in != os.getpid():
        atexit.register(_exit_without_teardown)
        _registered_in = os.getpid()


def exit_quickly(code: int = 0) -> None:
    """The command has ended with `code`: skip_teardown_at_exit's handler, if registered, ends
    the process with it once every other exit handler has run."""
    global _exit_code
    if _registered_in == os.getpid():
        _exit_code = code
