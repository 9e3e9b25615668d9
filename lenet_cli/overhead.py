"""Lightning costs that a LeNet training step notices, and what lenet-train does about them.

A LeNet-5 step at batch 64 takes about 4 ms on two CPU cores, so a few hundred microseconds of
bookkeeping a step is several per cent of the run. The other fixes live with the code they
concern: the progress bar redraws a few times a second (callbacks/progress.py), the checkpoint
callback builds its state key once (callbacks/checkpoint.py), the module sums its training metrics
in tensors and sets Lightning's hook name without nn.Module's checks (module.py).

Nothing here imports torch or Lightning at module level.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from typing import Any

_NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


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
        os.environ.pop(_NVML_CHECK, None)


def keep_freed_memory() -> bool:
    """glibc: serve large tensors from the heap and keep freed memory mapped, so that the
    activations a training step frees are reused by the next step instead of being returned to
    the system and faulted back in page by page.

    With glibc's adaptive defaults a one-epoch LeNet run here took 3.7 s with 0.3 M page faults in
    some runs and 6.2 s with 1.5 M in others; with these settings 3.1-3.8 s and 0.17 M every time
    (what PyTorch's CPU tuning guides get by preloading jemalloc or tcmalloc). Peak
    memory is unchanged; memory freed after a peak stays with the process (up to 512 MB).
    Nothing is changed when MALLOC_* variables are set or the C library is not glibc.
    Returns whether the settings were applied.
    """
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
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


def quiet_profiler() -> Any:
    """Lightning's default PassThroughProfiler, made cheaper. Lightning enters
    `trainer.profiler.profile(name)` around every hook, about a hundred times a training step, and
    the default builds a generator-based context manager each time; this one returns a shared
    no-op context."""
    from pytorch_lightning.profilers import PassThroughProfiler

    nothing = contextlib.nullcontext()

    class QuietProfiler(PassThroughProfiler):
        def profile(self, action_name: str) -> contextlib.AbstractContextManager:
            return nothing

    return QuietProfiler()
