"""Everything the terminal shows: the config tree, error panels and the final summary."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from lenet_cli.config import plain_config
from lenet_cli.errors import LenetError

console = Console()
err_console = Console(stderr=True)

TREE_ORDER = "model data optimizer scheduler trainer callbacks logger console paths".split()


def print_config(cfg: DictConfig, save_to: Path, show: bool = True) -> None:
    """The resolved config as a tree of YAML (main groups first, scalars at the root last), to the
    file `save_to` and, when `show`, to the terminal."""
    plain = plain_config(cfg)
    keys = [k for k in TREE_ORDER if k in plain] + [k for k in plain if k not in TREE_ORDER]
    tree = Tree("[bold]config[/]", guide_style="dim")
    for key in (k for k in keys if isinstance(plain[k], dict)):
        tree.add(f"[bold cyan]{key}[/]").add(Text(OmegaConf.to_yaml(plain[key]).rstrip()))
    if scalars := {k: plain[k] for k in keys if not isinstance(plain[k], dict)}:
        tree.add(Text(OmegaConf.to_yaml(scalars).rstrip()))
    if show:
        console.print(tree)
    Path(save_to).write_text(as_text(tree, width=120) + "\n")


def print_error(error: LenetError) -> None:
    """The error as a short red panel: what went wrong, its details, and the fix."""
    body = Text(error.message)
    if error.details:
        body.append("\n\n" + error.details, style="dim")
    if error.fix:
        body.append("\n\nFix: ", style="bold green").append(error.fix)
    err_console.print(Panel.fit(body, title=f"[bold red]{error.title}[/]", border_style="red"))


def run_command(command: Callable[..., Any], *args: Any) -> Any:
    """command(*args); a LenetError ends the process with its panel and exit code. (cli/app.py's
    exit_with does this for the Hydra commands, but importing app.py loads Lightning.)"""
    try:
        return command(*args)
    except LenetError as error:
        print_error(error)
        sys.exit(error.exit_code)


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "-"


def short_path(path: str | Path) -> str:
    """A path relative to the current folder when it lies below it (shorter in panels)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def summary_panel(metrics: Mapping[str, Any], run_dir: Path, checkpoint: str | None) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("test accuracy", _pct(metrics.get("test/acc")))
    if "test/loss" in metrics:
        table.add_row("test loss", f"{metrics['test/loss']:.4f}")
    table.add_row("best val accuracy", _pct(metrics.get("val/acc_best")))
    shifts = []  # test accuracy at each shift of the translation probe, 0-100% as a sparkline
    while f"probe/shift_acc_{len(shifts)}px" in metrics:
        shifts.append(metrics[f"probe/shift_acc_{len(shifts)}px"])
    if shifts:
        bars = "".join("▁▂▃▄▅▆▇█"[min(7, max(0, round(7 * v)))] for v in shifts)
        accuracies = " ".join(f"{100 * v:.1f}" for v in shifts)
        table.add_row("shifted test digits", f"{accuracies} % at 0-{len(shifts) - 1} px  {bars}")
    table.add_row("epochs", str(metrics.get("epochs", "-")))
    if "seed" in metrics:
        table.add_row("seed", str(metrics["seed"]))
    fit, speed = metrics.get("fit_seconds", 0), metrics.get("train_samples_per_second", 0)
    table.add_row("fit time", f"{fit:.1f} s ({speed:,.0f} samples/s)")
    table.add_row("run folder", short_path(run_dir))
    table.add_row("checkpoint", short_path(checkpoint) if checkpoint else "-")
    table.add_row("tensorboard", f"tensorboard --logdir {short_path(run_dir)}")
    return Panel.fit(table, title="[bold green]lenet-train: done[/]", border_style="green")


def as_text(renderable: Any, width: int = 100) -> str:
    """A rich renderable as plain text (for the run's log file)."""
    out = Console(file=io.StringIO(), width=width, color_system=None)
    out.print(renderable)
    return out.file.getvalue().rstrip()
