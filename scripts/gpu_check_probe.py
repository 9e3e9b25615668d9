"""A Lightning callback that scripts/gpu_check.py adds to each lenet-train run it starts.

    lenet-train ... +callbacks.gpu_probe._target_=gpu_check_probe.GpuProbe \
        '+callbacks.gpu_probe.output_dir=${paths.output_dir}'

(scripts/ must be on PYTHONPATH; gpu_check.sh puts it there.) It only records; the checks are
made by gpu_check.py from what it writes, gpu_probe-rank<N>.json in the run folder, after each
fit and test:

- where the data module's splits live (the data set is moved to the accelerator once);
- every batch as the loader hands it over, before Lightning's transfer to the device: how many
  were on another device than the training one (each such batch is a host-to-device copy per
  step), counted for training and for validation/test apart;
- the dtype of the first convolution's output while training (bfloat16 under bf16-mixed,
  float16 under 16-mixed), unless the network is compiled (a hook would break the graph);
- whether the network is compiled and its weights channels-last;
- peak CUDA memory allocated and reserved by this process (torch.cuda.max_memory_*), and the
  peak resident set size.
"""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

MIB = 2**20


class GpuProbe(pl.Callback):
    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)
        self.splits: dict[str, str] = {}
        self.batches = {
            phase: {"batches": 0, "off_device": 0, "devices": []} for phase in ("train", "eval")
        }
        self.conv_dtypes: list[str] = []
        self.compiled = False
        self.channels_last = False
        self._patched = False
        self._hook = None

    # -- setup: the splits, the transfer hook, the dtype hook -------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        for name, (images, _labels) in getattr(datamodule, "splits", {}).items():
            self.splits[name] = str(images.device)
        if datamodule is not None and not self._patched:
            self._watch_transfers(trainer, datamodule)
        net = getattr(pl_module, "net", pl_module)
        self.compiled = getattr(net, "_compiled_call_impl", None) is not None
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        if convs:
            self.channels_last = convs[0].weight.is_contiguous(memory_format=torch.channels_last)
            if not self.compiled and self._hook is None:
                self._hook = convs[0].register_forward_hook(self._record_dtype)

    def _watch_transfers(self, trainer: pl.Trainer, datamodule: pl.LightningDataModule) -> None:
        """Wrap the data module's transfer_batch_to_device: it sees each batch as the loader
        yields it, before it is moved (Lightning calls the data module's own hook when the
        data module overrides it, and an instance attribute counts as an override)."""
        original = datamodule.transfer_batch_to_device

        def transfer(batch: Any, device: torch.device, dataloader_idx: int) -> Any:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            if isinstance(images, torch.Tensor):
                phase = self.batches["train" if trainer.training else "eval"]
                phase["batches"] += 1
                if images.device.type != torch.device(device).type:
                    phase["off_device"] += 1
                if str(images.device) not in phase["devices"]:
                    phase["devices"].append(str(images.device))
            return original(batch, device, dataloader_idx)

        datamodule.transfer_batch_to_device = transfer
        self._patched = True

    def _record_dtype(self, module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        if module.training and isinstance(output, torch.Tensor):
            dtype = str(output.dtype).removeprefix("torch.")
            if dtype not in self.conv_dtypes:
                self.conv_dtypes.append(dtype)

    # -- writing ----------------------------------------------------------------------------------
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, "fit")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, "test")

    def _write(self, trainer: pl.Trainer, after: str) -> None:
        cuda = torch.cuda.is_available() and trainer.strategy.root_device.type == "cuda"
        record = {
            "after": after,
            "global_rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "strategy": type(trainer.strategy).__name__,
            "precision": str(trainer.precision),
            "root_device": str(trainer.strategy.root_device),
            "device_name": torch.cuda.get_device_name(trainer.strategy.root_device)
            if cuda
            else "cpu",
            "splits": self.splits,
            "batches": self.batches,
            "train_conv_dtypes": self.conv_dtypes,
            "compiled": self.compiled,
            "channels_last": self.channels_last,
            "cuda_peak_allocated_mib": round(torch.cuda.max_memory_allocated() / MIB, 1)
            if cuda
            else None,
            "cuda_peak_reserved_mib": round(torch.cuda.max_memory_reserved() / MIB, 1)
            if cuda
            else None,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "torch": torch.__version__,
            "pid": os.getpid(),
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"gpu_probe-rank{trainer.global_rank}.json"
        path.write_text(json.dumps(record, indent=2) + "\n")
