"""`lenet-predict CKPT IMAGE_OR_FOLDER [...]`: the digit on each photo of a handwritten one, after
MNIST's own preprocessing (lenet_cli/preprocess.py); unreadable files are reported and skipped."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lenet_cli.errors import CheckpointError

BATCH = 256  # photos through the network at a time


def as_json(file: Path, probabilities: list[float]) -> dict:
    rounded = [round(p, 6) for p in probabilities]
    label = probabilities.index(max(probabilities))
    return dict(path=str(file), label=label, confidence=rounded[label], probabilities=rounded)


def _table(answers: list[dict], k: int):
    from rich.table import Table

    table = Table()
    table.add_column("file", overflow="fold")  # a path is worth more whole than on one line
    table.add_column("digit", justify="right", style="bold")
    table.add_column("confidence", justify="right")
    table.add_column(f"top {k}")
    for a in answers:
        top = sorted(enumerate(a["probabilities"]), key=lambda cq: -cq[1])[:k]
        shown = "  ".join(f"{c} {100 * q:.1f}%" for c, q in top)
        table.add_row(a["path"], str(a["label"]), f"{100 * a['confidence']:.1f}%", shown)
    return table


def run(args: argparse.Namespace) -> None:
    import torch

    from lenet_cli.checkpoint_io import load_checkpoint
    from lenet_cli.console import console
    from lenet_cli.preprocess import read_images, save_preprocessed

    checkpoint = load_checkpoint(args.checkpoint)
    if checkpoint.input_shape != (1, 28, 28):
        raise CheckpointError(
            f"{args.checkpoint}: its network takes {'x'.join(map(str, checkpoint.input_shape))} "
            "images; photos are turned into 1x28x28 MNIST-style images.",
            fix="Use a checkpoint trained on MNIST-format data (28x28 greyscale).",
        )
    files, images = read_images(args.images)
    if args.save_preprocessed:
        save_preprocessed(args.save_preprocessed, files, images)
    with torch.inference_mode():
        batches = torch.from_numpy(images).unsqueeze(1).split(BATCH)
        probabilities = torch.cat([checkpoint.network(x).softmax(1) for x in batches]).tolist()
    answers = [as_json(f, p) for f, p in zip(files, probabilities, strict=True)]
    if args.json:
        # One object a line: valid JSON that stays readable with ten probabilities each.
        print("[\n" + ",\n".join("  " + json.dumps(a) for a in answers) + "\n]")
    else:
        console.print(_table(answers, min(args.top_k, checkpoint.num_classes)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="lenet-predict",
        description="Predict the digit on photos (PNG, JPEG, BMP, ...) of handwritten digits of "
        "any size and colours, with MNIST's preprocessing.",
        epilog="Example: lenet-predict outputs/<date>/<time>/checkpoints/best.ckpt photos/ --json",
    )
    parser.add_argument("checkpoint", help="a .ckpt written by lenet-train")
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders of them"
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON: [{path, label, confidence, probabilities}]"
    )
    parser.add_argument(
        "--top-k", type=int, default=3, metavar="K", help="likeliest classes shown (default 3)"
    )
    parser.add_argument(
        "--save-preprocessed", type=Path, metavar="DIR", help="save the 28x28 network inputs in DIR"
    )
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    from lenet_cli.console import run_command

    run_command(run, args)
