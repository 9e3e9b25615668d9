"""`lenet-export CKPT --format onnx|torchscript --output PATH`: the command around exporters.py."""

from __future__ import annotations

import argparse
from pathlib import Path

from lenet_cli.exporters import CHECK_BATCH, EXPORTERS, export


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="lenet-export",
        description="Export a lenet-train checkpoint as ONNX or TorchScript. The exported model "
        "takes pixels in [0, 1] of shape (N, 1, 28, 28) and returns logits.",
        epilog="Example: lenet-export outputs/<date>/<time>/checkpoints/best.ckpt --format onnx "
        "--output lenet.onnx",
    )
    parser.add_argument("checkpoint", help="a .ckpt written by lenet-train")
    parser.add_argument("--format", choices=EXPORTERS, required=True)
    parser.add_argument(
        "--output", type=Path, required=True, metavar="PATH", help="e.g. lenet.onnx or lenet.pt"
    )
    args = parser.parse_args(argv)
    from rich.panel import Panel
    from rich.table import Table

    from lenet_cli.console import console, run_command, short_path

    difference, shape = run_command(export, args.checkpoint, args.format, args.output)
    size = args.output.stat().st_size / 1024
    dims = ", ".join(map(str, shape))
    table = Table.grid(padding=(0, 2))
    table.add_row("[bold]file", f"{short_path(args.output)} ({size:,.0f} KiB, {args.format})")
    table.add_row("[bold]input", f"pixels: float32 (N, {dims}) in [0, 1], ink bright on black")
    table.add_row("[bold]output", "logits: float32 (N, classes)")
    batches = f"batches of {CHECK_BATCH} and 1"
    table.add_row("[bold]checked", f"max abs difference from PyTorch {difference:.2e} ({batches})")
    console.print(Panel.fit(table, title="[bold green]lenet-export: done[/]", border_style="green"))
