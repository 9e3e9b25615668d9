"""The run card: what is about to train, in about ten lines, before the first progress bar (the
whole config goes to config_tree.txt, and to the terminal with console.verbose=true)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from rich.panel import Panel
from rich.table import Column, Table

from lenet_cli.config import augmentation, plain_config
from lenet_cli.console import short_path
from lenet_cli.models.describe import describe_network


def _model_lines(model: dict[str, Any], net: Any) -> list[str]:
    total = describe_network(net)["total"]
    first = (
        f"{model.get('name', '?')}  {total['params']:,} parameters  "
        f"{total['macs'] / 1e6:.2f} M multiply-adds per image"
    )
    if "channels" not in model:  # the MLP baseline
        hidden = "-".join(str(h) for h in model.get("hidden") or []) or "none"
        return [first, f"hidden layers {hidden}, {model.get('activation')}"]
    kernel = model.get("kernel_size")
    kernel = "-".join(map(str, kernel)) if isinstance(kernel, list) else kernel
    channels = "-".join(str(c) for c in model["channels"])
    head = model.get("head", "linear")
    return [
        first,
        f"{model.get('activation')}, {model.get('pooling')} pooling, kernel {kernel}, "
        f"channels {channels}" + ("" if head == "linear" else f", {head} head"),
    ]


def _data_lines(data: DictConfig, split_sizes: dict[str, int], processes: int) -> list[str]:
    sizes = "  ".join(f"{n:,} {split}" for split, n in split_sizes.items())
    batch = f"batch {data.batch_size}" + (
        f" per process ({data.batch_size * processes} in all)" if processes > 1 else ""
    )
    lines = [f"{data.get('name', data.dataset)}  {sizes}"]
    augment = augmentation(data.get("augment", "none"))
    if augment == "shift_rotate":
        lines.append(
            f"{batch}, augmented (shift {data.max_shift} px, rotation {data.max_rotation} deg)"
        )
    elif augment == "affine":  # a line of its own: four ranges do not fit after the batch
        a = data.affine
        lines += [
            f"{batch}, affine distortions as in LeCun et al. 1998",
            f"shift {a.translate:g} px, scale ±{a.scale:g}, squeeze ±{a.squeeze:g}, "
            f"shear ±{a.shear:g}",
        ]
    else:
        lines.append(f"{batch}, no augmentation")
    return lines


def _schedule(scheduler: dict[str, Any] | None) -> str:
    name = str((scheduler or {}).get("_target_", "")).rsplit(".", 1)[-1]
    if name == "OneCycleLR":
        div, final = scheduler.get("div_factor", 25.0), scheduler.get("final_div_factor", 1e4)
        return (
            f"one cycle: lr/{div:g} up to lr in {scheduler.get('pct_start', 0.3):.0%} of steps, "
            f"down to lr/{div * final:g}"
        )
    if name == "CosineAnnealingLR":
        return f"cosine: from lr down to {scheduler.get('eta_min', 0):g} over the run"
    if name == "StepLR":
        return f"step: lr x{scheduler.get('gamma')} every {scheduler.get('step_size')} epochs"
    return "constant lr" if not name else name


def _optimiser_line(optimizer: dict[str, Any]) -> str:
    name = str(optimizer.get("_target_", "")).rsplit(".", 1)[-1]
    shown = {"lr": "lr", "weight_decay": "weight decay", "momentum": "momentum"}
    extra = [f"{label} {optimizer[key]:g}" for key, label in shown.items() if optimizer.get(key)]
    return f"{name}  " + ", ".join(extra)


def _trainer_line(trainer: pl.Trainer) -> str:
    epochs, processes = trainer.max_epochs, trainer.world_size
    # What the Trainer set for the whole process (trainer.deterministic turns benchmark off).
    benchmark = "on" if torch.backends.cudnn.benchmark else "off"
    deterministic = torch.are_deterministic_algorithms_enabled()
    return (
        f"{trainer.strategy.root_device.type}, precision {trainer.precision}, {epochs} "
        f"epoch{'s' * (epochs != 1)}, {processes} process{'es' * (processes != 1)}"
        + (f", deterministic (cuDNN benchmark {benchmark})" if deterministic else "")
    )


def run_card(cfg: DictConfig, trainer: pl.Trainer, net: Any, split_sizes: dict[str, int]) -> Panel:
    """The card printed before training: sizes from `net`, the network that will train (not a
    second one built for the card); split_sizes: train/val/test images."""
    plain = plain_config(cfg)
    rows = {
        "model": "\n".join(_model_lines(plain["model"], net)),
        "data": "\n".join(_data_lines(cfg.data, split_sizes, trainer.world_size)),
        "optimiser": _optimiser_line(plain["optimizer"]),
        "schedule": _schedule(plain.get("scheduler")),
        "trainer": _trainer_line(trainer),
        "seed": str(cfg.seed),
        "run folder": short_path(Path(cfg.paths.output_dir)),
    }
    table = Table.grid(Column(style="bold"), Column(overflow="fold"), padding=(0, 2))
    for label, text in rows.items():
        table.add_row(label, text)
    return Panel(table, title="[bold]lenet-train[/]", border_style="blue", expand=False)
