"""Process-wide settings that the console commands apply, and only they.

Each one changes the whole process (the C allocator, an environment variable that child processes
inherit, the way the interpreter ends), so it is applied by the `lenet-train` and `lenet-eval`
commands themselves (lenet_cli/cli/app.py, in the command's own process), never by importing or
calling the library: a test or a notebook that calls `lenet_cli.cli.train.train(cfg)` keeps its
allocator, environment and exit. (Lightning's console chatter is still routed to the log file
and its loader warnings filtered by the trainer factory, lenet_cli/training/trainer.py.)

Each earns its place in scripts/bench.py (part `measures`): it saves >= 2% of a training epoch
on the reference machine, or it goes. Nothing here imports torch or Lightning at module level.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any


def use_plain_cuda_check(strategy: Any) -> None:
    """Unset PYTORCH_NVML_BASED_CUDA_CHECK, which Lightning sets to 1 when it is imported, unless
    the run's strategy forks processes.

    With it, every torch.cuda.is_available() asks NVML, and torch's optimisers call that on every
    step: on a machine without a GPU driver that is a failed dlopen of libnvidia-ml, about 0.3 ms a
    step (5% of a LeNet step at batch 64). Lightning sets it so that looking for a GPU never
    initialises CUDA before a fork; lenet-train starts processes with subprocess or torchrun, so
    only the fork-based strategies (ddp_fork, ddp_notebook) keep it. Child processes inherit the
    variable, so it is removed rather than restored to a value seen at start-up.
    """
    text = str(strategy)
    if "fork" not in text and "notebook" not in text:
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


def keep_freed_memory() -> bool:
    """glibc: serve large tensors from the heap and keep freed memory mapped, so that the
    activations a training step frees are reused by the next step instead of being returned to
    the system and faulted back in page by page.

    With glibc's adaptive defaults a one-epoch LeNet run here took 3.7 s with 0.3 M page faults in
    some runs and 6.2 s with 1.5 M in others; with these settings 3.1-3.8 s and 0.17 M every time
    (what PyTorch's CPU tuning guides get by preloading jemalloc or tcmalloc). Peak
    memory is unchanged; memory freed after a peak stays with the process (up to 512 MB).
    Returns whether they were applied: not under MALLOC_* settings, another preloaded allocator
    (LD_PRELOAD=libjemalloc.so.2 or libtcmalloc.so.4, the standard alternative) or another libc.
    """
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
    """End a finished command without the interpreter's teardown of its modules.

    Once torch and Lightning are imported, finalising the interpreter takes about 1.7 s on the
    reference machine (1.3 s after `import pytorch_lightning` alone): a quarter of a short run's
    wall time, and most of the time a refused run takes. Every exit handler registered after
    this call (TensorBoard writers, loggers a user adds, joblib's workers) still runs, and so
    does logging's; only the freeing of modules is skipped. Call it first thing in a console
    entry point, then `exit_quickly(code)` once the command has ended the way it meant to (done,
    or a panel shown); an unexpected exception ends the normal way. tests/test_speed_measures.py
    checks that a handler registered during a run still runs.
    """
    import atexit

    global _exit_code, _registered_in
    _exit_code = None
    if _registered_in != os.getpid():
        atexit.register(_exit_without_teardown)
        _registered_in = os.getpid()


def exit_quickly(code: int = 0) -> None:
    """The command has ended with `code`: the handler of skip_teardown_at_exit (if registered)
    ends the process with it once every other exit handler has run."""
    global _exit_code
    if _registered_in == os.getpid():
        _exit_code = code
