"""What lenet-eval prints: the per-class precision/recall table and the closing summary panel."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.panel import Panel
from rich.table import Table

from lenet_cli.console import short_path


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
