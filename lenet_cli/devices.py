"""Checking the requested accelerator and device count against this machine, before training."""

from __future__ import annotations

import inspect
import os
from importlib.util import find_spec
from typing import Any

from lenet_cli.errors import ConfigError, DeviceError


def check_devices(trainer_cfg: Any, optimizer_cfg: Any = None) -> None:
    """Refuse trainer.accelerator / devices / precision that this machine cannot provide."""
    import torch

    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    devices = trainer_cfg.get("devices", "auto")
    # device_count asks NVML before CUDA (is_available initialises CUDA unless
    # PYTORCH_NVML_BASED_CUDA_CHECK=1): a fork-based strategy (ddp_fork) needs it untouched.
    gpus = torch.cuda.device_count()
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0)
    if on_gpu and not gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise DeviceError(
            f"trainer.accelerator={accelerator} but no CUDA GPU is visible on this machine"
            + (f" (CUDA_VISIBLE_DEVICES={visible!r})." if visible is not None else "."),
            fix="Use trainer.accelerator=cpu, or trainer.accelerator=auto to use a GPU only when "
            "there is one.",
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(
            "trainer.accelerator=mps but Apple's MPS backend is not available.",
            fix="Use trainer.accelerator=cpu or auto.",
        )
    kind, available = ("CUDA GPU(s)", gpus) if on_gpu else ("CPU core(s)", os.cpu_count() or 1)
    if accelerator == "mps":
        kind, available = "MPS device", 1
    wanted = list(devices) if not isinstance(devices, (str, int)) else None
    if isinstance(devices, int) and devices > available or wanted and max(wanted) >= available:
        raise DeviceError(
            f"trainer.devices={devices} but this machine has {available} {kind}.",
            fix=f"Use trainer.devices=1 .. {available}, or trainer.devices=auto.",
        )
    check_precision(str(trainer_cfg.get("precision")), on_gpu, optimizer_cfg)


def check_precision(precision: str, on_gpu: bool, optimizer_cfg: Any = None) -> None:
    """Refuse transformer-engine without a GPU and its package, and 16-true with an optimiser
    eps that float16 cannot hold."""
    import torch
    from hydra.utils import get_class

    if precision == "transformer-engine" and not (on_gpu and find_spec("transformer_engine")):
        raise DeviceError(
            "trainer.precision=transformer-engine needs a CUDA GPU and transformer_engine.",
            fix="Use 32-true, 64-true, bf16-mixed, 16-mixed, bf16-true or 16-true here.",
        )
    target = (optimizer_cfg or {}).get("_target_")
    if precision != "16-true" or not target:
        return
    param = inspect.signature(get_class(target)).parameters.get("eps")
    eps = optimizer_cfg.get("eps", param.default) if param else None
    if eps is not None and eps < torch.finfo(torch.float16).tiny:
        raise ConfigError(
            f"trainer.precision=16-true with optimizer eps={eps:g}, below float16's smallest "
            "normal number (6.1e-05): the first update divides by zero and the loss is NaN.",
            fix="Add ++optimizer.eps=1e-4, or use trainer.precision=16-mixed (float16 with "
            "loss scaling) or bf16-true.",
        )


def gpu_compute_capabilities() -> list[tuple[int, int]] | None:
    """Every NVIDIA GPU's compute capability, or None without a driver. Asked of NVML, not of
    torch.cuda, which would initialise CUDA: ddp_fork and ddp_notebook cannot fork after that."""
    import ctypes

    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if nvml.nvmlInit_v2() != 0:
        return None
    try:
        count, found = ctypes.c_uint(), []
        if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return None
        for index in range(count.value):
            handle, major, minor = ctypes.c_void_p(), ctypes.c_int(), ctypes.c_int()
            if nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0:
                return None
            if nvml.nvmlDeviceGetCudaComputeCapability(
                handle, ctypes.byref(major), ctypes.byref(minor)
            ):
                return None
            found.append((major.value, minor.value))
        return found
    finally:
        nvml.nvmlShutdown()


def training_precision(precision: Any, accelerator: Any = "auto") -> Any:
    """trainer.precision as given, except bf16 becomes 16-mixed on a GPU older than Ampere
    (compute capability 8.0), which only emulates it, several times slower than fp16 (and
    torch.cuda.is_bf16_supported() counts that as support). The oldest GPU decides."""
    if not str(precision).startswith("bf16") or str(accelerator) not in ("gpu", "cuda", "auto"):
        return precision
    if os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip() in ("", "-1"):
        return precision  # GPUs hidden: the run is on the CPU
    capabilities = gpu_compute_capabilities()
    if capabilities and min(capabilities)[0] < 8:
        return "16-mixed"  # (not 16-true: pure fp16 without loss scaling underflows Adam's eps)
    return precision
