"""What lenet-eval reports: the per-class table and summary panel it prints, and the pictures it
saves (confusion_matrix.png and worst_mistakes.png, also drawn into TensorBoard)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.panel import Panel
from rich.table import Table

from lenet_cli.console import short_path


def class_labels(cfg: DictConfig, num_classes: int) -> list[str]:
    """Names to show for each class: digits for MNIST, the data config's names otherwise."""
    names = list(cfg.data.get("classes") or [])
    if cfg.data.get("dataset") == "MNIST" or len(names) != num_classes:
        return [str(c) for c in range(num_classes)]
    return [str(name) for name in names]


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.2f}%"


def per_class_table(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> Table:
    """One row per class; recall is the share of the class's images it got right (its accuracy)."""
    table = Table(title="Per-class results on the test set", title_justify="left")
    table.add_column("class")
    table.add_column("precision", justify="right")
    table.add_column("recall", justify="right")
    table.add_column("images", justify="right")
    table.add_column("most often taken for", justify="left")
    worst_recall = min((r["recall"] for r in rows if r["support"]), default=None)
    for row in rows:
        confused = row["confused_with"]
        style = "bold red" if row["support"] and row["recall"] == worst_recall else None
        table.add_row(
            names[row["class"]],
            _pct(row["precision"]),
            _pct(row["recall"]),
            f"{row['support']:,}",
            f"{names[confused]} ({row['confused_count']})" if confused is not None else "-",
            style=style,
        )
    return table


def eval_summary(
    metrics: Mapping[str, Any], checkpoint, run_dir: Path, pictures: Mapping[str, Path]
) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("test accuracy", _pct(metrics["test/acc"]))
    table.add_row("test loss", f"{metrics['test/loss']:.4f}")
    table.add_row("images", f"{metrics['test/samples']:,} in {metrics['eval_seconds']:.1f} s")
    table.add_row("checkpoint", f"{short_path(checkpoint.path)} ({checkpoint.name})")
    table.add_row("run folder", short_path(run_dir))
    for name, path in pictures.items():
        table.add_row(name.replace("_", " "), short_path(path))
    table.add_row("tensorboard", f"tensorboard --logdir {short_path(run_dir)}")
    return Panel(table, title="[bold green]lenet-eval: done[/]", border_style="green", expand=False)


def save_png(figure, path: Path) -> None:
    """Write a matplotlib figure as PNG atomically: a reader never sees half a picture."""
    import io

    from lenet_cli.files import write_bytes_atomic

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())


def save_pictures(
    cfg: DictConfig, evaluation, images, num_classes: int, run_dir: Path, loggers
) -> dict[str, Path]:
    """confusion_matrix.png and worst_mistakes.png in the run folder, and both in TensorBoard
    (under the tags lenet-train's pictures use: confusion_matrix and mistakes/test)."""
    from pytorch_lightning.loggers import TensorBoardLogger

    from lenet_cli.evaluation.figures import confusion_figure, figure_to_array, mistakes_figure

    worst = evaluation.worst_mistakes(int(cfg.mistakes))
    digits = images[worst, 0].float().numpy() / 255
    pictures = {
        "confusion_matrix": (
            "confusion_matrix",
            confusion_figure(
                evaluation.confusion_matrix(num_classes), class_labels(cfg, num_classes)
            ),
        ),
    }
    if cfg.mistakes:
        labels, said = evaluation.labels[worst].tolist(), evaluation.predictions[worst].tolist()
        grid = mistakes_figure(digits, labels, said, evaluation.confidence(worst).tolist())
        pictures["worst_mistakes"] = ("mistakes/test", grid)
    draw = (cfg.get("logger") or {}).get("images", True)
    tensorboards = [lg for lg in loggers if draw and isinstance(lg, TensorBoardLogger)]
    saved = {}
    for name, (tag, figure) in pictures.items():
        saved[name] = run_dir / f"{name}.png"
        save_png(figure, saved[name])
        for logger in tensorboards:
            logger.experiment.add_image(tag, figure_to_array(figure), 0, dataformats="HWC")
    return saved
