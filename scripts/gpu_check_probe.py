"""What scripts/gpu_check.py asks inside the processes it starts (scripts/ is on PYTHONPATH).

    python gpu_check_probe.py environment OUT.json  # versions, GPU, unmet requirements, warnings
    python gpu_check_probe.py steps OUT.json        # a training step of each model, no host sync
    lenet-train ... +callbacks.gpu_probe._target_=gpu_check_probe.GpuProbe \\
        '+callbacks.gpu_probe.output_dir=${paths.output_dir}'

GpuProbe only records, into gpu_probe-rank<N>.json in the run folder after each fit and test:
where the data module's splits live; how many batches the loaders handed over on another device
than the training one (each a host-to-device copy per step); the output dtype of the first
convolution with more than one input channel, and whether its input and weight are channels-last
(no hook when the network is compiled: it would break the graph); cuDNN's benchmark and the
deterministic flag as the Trainer set them; peak CUDA memory and resident set size.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

MIB = 2**20


class GpuProbe(pl.Callback):
    def __init__(self, output_dir: str) -> None:
        self.output_dir = Path(output_dir)
        self.splits: dict[str, str] = {}
        self.batches = {p: {"batches": 0, "off_device": 0} for p in ("train", "eval")}
        self.conv: dict[str, Any] = {}
        self._watching = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        self.splits = {k: str(x.device) for k, (x, _) in getattr(datamodule, "splits", {}).items()}
        if datamodule is None or self._watching:
            return
        self._watching = True
        # An instance attribute counts as the data module's own hook: Lightning calls it with
        # each batch as the loader yields it, before moving it.
        original = datamodule.transfer_batch_to_device

        def transfer(batch: Any, device: torch.device, dataloader_idx: int) -> Any:
            phase = self.batches["train" if trainer.training else "eval"]
            phase["batches"] += 1
            phase["off_device"] += batch[0].device.type != torch.device(device).type
            return original(batch, device, dataloader_idx)

        datamodule.transfer_batch_to_device = transfer
        convs = [m for m in pl_module.modules() if isinstance(m, torch.nn.Conv2d)]
        wide = [m for m in convs if m.in_channels > 1]  # one input channel: either layout
        if wide and not pl_module.hparams.get("model", {}).get("compile"):
            wide[0].register_forward_hook(self._record_conv)

    def _record_conv(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if module.training and not self.conv:
            layout = torch.channels_last
            self.conv = {
                "dtype": str(output.dtype).removeprefix("torch."),
                "input_channels_last": inputs[0].is_contiguous(memory_format=layout),
                "weight_channels_last": module.weight.is_contiguous(memory_format=layout),
            }

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)

    def _write(self, trainer: pl.Trainer) -> None:
        cuda = trainer.strategy.root_device.type == "cuda"
        record = {
            "world_size": trainer.world_size,
            "strategy": type(trainer.strategy).__name__,
            "precision": str(trainer.precision),
            "root_device": str(trainer.strategy.root_device),
            "device_name": torch.cuda.get_device_name() if cuda else "cpu",
            "splits": self.splits,
            "batches": self.batches,
            "conv": self.conv,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "cuda_peak_mib": round(torch.cuda.max_memory_allocated() / MIB) if cuda else None,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "pid": os.getpid(),
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / f"gpu_probe-rank{trainer.global_rank}.json"
        path.write_text(json.dumps(record, indent=1) + "\n")


def unmet_requirements(name: str = "lenet-cli") -> list[str]:
    """lenet-cli's requirements that this environment does not meet; those of the bundle's
    packages (installed beside lenet-cli) too, the machine's own packages' not."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement

    site = str(distribution(name).locate_file(""))
    unmet, todo, seen = [], [name], {name}
    while todo:
        for text in distribution(todo.pop()).requires or []:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            try:
                found = distribution(requirement.name)
            except PackageNotFoundError:
                unmet.append(f"{requirement} (missing)")
                continue
            if not requirement.specifier.contains(found.version, prereleases=True):
                unmet.append(f"{requirement} (found {found.version})")
            key = requirement.name.lower()
            if str(found.locate_file("")) == site and key not in seen:
                seen.add(key)
                todo.append(requirement.name)
    return unmet


def environment() -> dict[str, Any]:
    import hydra
    from hydra.core.plugins import Plugins

    import lenet_cli

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Plugins.instance()  # imports every Hydra plugin, ours (submitit's launcher) included
    cuda = torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "hydra": hydra.__version__,
        "python": sys.version.split()[0],
        "lenet_cli": lenet_cli.__file__,
        "gpus": torch.cuda.device_count() if cuda else 0,
        "name": torch.cuda.get_device_name(0) if cuda else None,
        "bf16": bool(cuda and torch.cuda.is_bf16_supported(including_emulation=False)),
        "unmet": unmet_requirements(),
        "plugin_warnings": [str(w.message).splitlines()[0] for w in caught],
    }


def steps() -> dict[str, str]:
    """One training step (forward, loss, backward, optimiser) of each named model with bf16
    autocast, as trainer=gpu trains, under torch.cuda.set_sync_debug_mode("error"): any host-device
    synchronisation raises. One step before it, unwatched, creates the optimiser's state.
    On the CPU (gpu_check.sh --dry-run) the same steps, without the sync mode."""
    from importlib.resources import files

    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from lenet_cli.models import build_network

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    folder = files("lenet_cli.conf") / "model"
    names = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    found = {}
    with initialize_config_module("lenet_cli.conf", version_base="1.3"):
        for name in names:
            cfg = compose("train", [f"model={name}"])
            net = build_network(OmegaConf.to_container(cfg.model, resolve=True)).to(device)
            optimizer = instantiate(cfg.optimizer)(net.parameters())
            shape = (64, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
            x = torch.rand(shape, device=device)
            y = torch.randint(0, cfg.data.num_classes, (64,), device=device)
            try:
                for watched in (False, True):
                    if device.type == "cuda":
                        torch.cuda.set_sync_debug_mode("error" if watched else "default")
                    with torch.autocast(device.type, dtype=torch.bfloat16):
                        loss = torch.nn.functional.cross_entropy(net(x), y)
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad()
                found[name] = "ok"
            except RuntimeError as error:
                found[name] = str(error).strip().splitlines()[0]
            finally:
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
    return found


if __name__ == "__main__":  # gpu_check_probe.py environment|steps OUTPUT.json
    found = {"environment": environment, "steps": steps}[sys.argv[1]]()
    Path(sys.argv[2]).write_text(json.dumps(found, indent=1) + "\n")
