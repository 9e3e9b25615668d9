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
import os
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
