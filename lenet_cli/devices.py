"""Checking the requested accelerator and device count against this machine, before training."""

from __future__ import annotations

import os
from typing import Any

from lenet_cli.errors import DeviceError


def check_devices(trainer_cfg: Any) -> None:
    """Refuse trainer.accelerator / trainer.devices that this machine cannot provide."""
    import torch

    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    devices = trainer_cfg.get("devices", "auto")
    cuda = torch.cuda.is_available()
    if accelerator in ("gpu", "cuda") and not cuda:
        raise DeviceError(
            f"trainer.accelerator={accelerator} but no CUDA GPU is visible on this machine"
            + (
                f" (CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r})."
                if "CUDA_VISIBLE_DEVICES" in os.environ
                else "."
            ),
            fix="Use trainer.accelerator=cpu, or trainer.accelerator=auto to use a GPU only when "
            "there is one.",
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(
            "trainer.accelerator=mps but Apple's MPS backend is not available.",
            fix="Use trainer.accelerator=cpu or auto.",
        )
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and cuda)
    kind, available = (
        ("CUDA GPU(s)", torch.cuda.device_count())
        if on_gpu
        else ("CPU core(s)", os.cpu_count() or 1)
    )
    if accelerator == "mps":
        kind, available = "MPS device", 1
    wanted = list(devices) if not isinstance(devices, (str, int)) else None
    if isinstance(devices, int) and devices > available or wanted and max(wanted) >= available:
        raise DeviceError(
            f"trainer.devices={devices} but this machine has {available} {kind}.",
            fix=f"Use trainer.devices=1 .. {available}, or trainer.devices=auto.",
        )


def check_multirun_strategy(cfg: Any) -> None:
    """DDP jobs inside a local multirun would start their processes in the wrong folder: refuse."""
    from hydra.core.hydra_config import HydraConfig

    mode = HydraConfig.get().mode if HydraConfig.initialized() else None
    if getattr(mode, "name", None) != "MULTIRUN":  # None when composed by the compose API
        return
    strategy = cfg.trainer.get("strategy", "auto")
    name = strategy.get("_target_", "") if hasattr(strategy, "get") else str(strategy)
    if "ddp" in name.lower() and "SLURM_JOB_ID" not in os.environ:
        raise DeviceError(
            "DDP jobs inside a multirun are supported on SLURM only (hydra/launcher=slurm, "
            "where srun starts one process per device).",
            fix="Sweep single-process jobs (e.g. trainer=cpu or trainer=gpu), or run each DDP "
            "configuration as its own lenet-train command.",
        )
