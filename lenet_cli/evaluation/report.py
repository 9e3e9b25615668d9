"""What lenet-eval reports: the per-class table and summary panel it prints, and the pictures it
saves (confusion_matrix.png and worst_mistakes.png, also drawn into TensorBoard)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from rich.panel import Panel
from rich.table import Table

from lenet_cli.console import short_path
from lenet_cli.files import write_atomic


def class_labels(cfg: DictConfig, num_classes: int) -> list[str]:
    """Names to show for each class: digits for MNIST, the data config's names otherwise."""
    names = list(cfg.data.get("classes") or [])
    if cfg.data.get("dataset") == "MNIST" or len(names) != num_classes:
        return [str(c) for c in range(num_classes)]
    return [str(name) for name in names]


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}%"


def per_class_table(outcome: Mapping[str, np.ndarray], names: Sequence[str]) -> Table:
    """One row per class of LeNetModule.test_outcome; recall is the share of the class's images
    it got right (its accuracy); "-" where a class has no image, or was never predicted."""
    table = Table(title="Per-class results on the test set", title_justify="left")
    table.add_column("class")
    for column in ("precision", "recall", "images"):
        table.add_column(column, justify="right")
    table.add_column("most often taken for")
    matrix = outcome["confusion"]
    support, wrong = matrix.sum(1), matrix * (1 - np.eye(len(matrix), dtype=matrix.dtype))
    precision = np.where(matrix.sum(0) > 0, outcome["precision_class"], np.nan)
    recall = np.where(support > 0, outcome["acc_class"], np.nan)
    worst_recall = np.nanmin(recall) if (support > 0).any() else None
    for c, name in enumerate(names):
        confused = f"{names[wrong[c].argmax()]} ({wrong[c].max()})" if wrong[c].any() else "-"
        style = "bold red" if recall[c] == worst_recall else None
        table.add_row(
            name, _pct(precision[c]), _pct(recall[c]), f"{support[c]:,}", confused, style=style
        )
    return table


def eval_summary(
    metrics: Mapping[str, Any], checkpoint, run_dir: Path, pictures: Mapping[str, Path]
) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")  # the values' column is added by add_row
    table.add_row("test accuracy", _pct(metrics["test/acc"]))
    table.add_row("test loss", f"{metrics['test/loss']:.4f}")
    table.add_row("images", f"{metrics['test/samples']:,} in {metrics['eval_seconds']:.1f} s")
    table.add_row("checkpoint", f"{short_path(checkpoint.path)} ({checkpoint.name})")
    table.add_row("run folder", short_path(run_dir))
    for name, path in pictures.items():
        table.add_row(name.replace("_", " "), short_path(path))
    table.add_row("tensorboard", f"tensorboard --logdir {short_path(run_dir)}")
    return Panel(table, title="[bold green]lenet-eval: done[/]", border_style="green", expand=False)


def save_pictures(
    cfg: DictConfig, outcome: Mapping[str, np.ndarray], run_dir: Path, loggers: list[Any]
) -> dict[str, Path]:
    """The test's pictures as PNGs in the run folder and in TensorBoard (lenet-train's tags)."""
    from pytorch_lightning.loggers import TensorBoardLogger

    from lenet_cli.evaluation.figures import figure_to_array, test_figures

    drawn = test_figures(outcome, class_labels(cfg, len(outcome["confusion"])))
    files = {"confusion_matrix": "confusion_matrix", "mistakes/test": "worst_mistakes"}
    draw = (cfg.get("logger") or {}).get("images", True)
    tensorboards = [lg for lg in loggers if draw and isinstance(lg, TensorBoardLogger)]
    saved = {}
    for tag, figure in drawn.items():  # the mistakes only when cfg.mistakes kept some
        saved[files[tag]] = run_dir / f"{files[tag]}.png"
        write_atomic(saved[files[tag]], partial(figure.savefig, format="png"))  # never half a PNG
        for logger in tensorboards:
            logger.experiment.add_image(tag, figure_to_array(figure), 0, dataformats="HWC")
    return saved
