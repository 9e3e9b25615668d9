"""Make the README's pictures from real lenet-train runs on MNIST.

    LENET_DATA_DIR=../shared/data .venv/bin/python scripts/make_docs_figures.py [--epochs 2]

Trains classic, modern and mlp for a few epochs each with the ordinary `lenet-train` command
(pictures on, translation probe over the whole test set), then writes:

  docs/filters.png            classic's C1 kernels and C3 kernels summed over their inputs
  docs/feature_maps.png       classic's C1 and S2 maps for 8 test digits
  docs/translation_probe.png  test accuracy against shift for classic, modern and mlp

The filter and feature-map grids are read back from the classic run's TensorBoard events, so
they are exactly what TensorBoard shows; the probe values come from each run's metrics.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lenet_cli.evaluation import figures  # noqa: E402

BIN = Path(sys.executable).parent
MODELS = {
    "classic": "classic (LeNet-5, 1998)",
    "modern": "modern (ReLU, max pool)",
    "mlp": "mlp (784-512-512-10)",
}


def train(model: str, epochs: int, output_root: Path) -> Path:
    """One lenet-train run; returns its run folder."""
    before = set(output_root.glob("*/*"))
    command = [
        str(BIN / "lenet-train"),
        f"model={model}",
        f"trainer.max_epochs={epochs}",
        "callbacks.pictures.probe_samples=10000",  # the whole test set
        "callbacks.progress_bar=null",
        f"paths.output_root={output_root}",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    (run,) = set(output_root.glob("*/*")) - before
    print(f"{model}: {time.perf_counter() - start:.0f} s, run folder {run}")
    return run


def tensorboard_image(run: Path, tag: str) -> np.ndarray:
    """The last image logged under tag in the run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    return np.asarray(
        Image.open(io.BytesIO(events.Images(tag)[-1].encoded_image_string)).convert("RGB")
    )


def panels(images: list[tuple[str, np.ndarray]], path: Path, title: str) -> None:
    """Stack images vertically, each under its caption, at their own pixel size."""
    from matplotlib.figure import Figure

    caption, gap = 26, 14
    width = max(image.shape[1] for _, image in images) + 20
    height = sum(image.shape[0] + caption + gap for _, image in images) + 30
    figure = Figure(figsize=(width / 100, height / 100), dpi=100)
    figure.text(0.5, 1 - 8 / height, title, ha="center", va="top", fontsize=10, weight="bold")
    top = 30
    for text, image in images:
        figure.text(10 / width, 1 - (top + 6) / height, text, ha="left", va="top", fontsize=9)
        top += caption
        h, w = image.shape[:2]
        ax = figure.add_axes((10 / width, 1 - (top + h) / height, w / width, h / height))
        ax.imshow(image, interpolation="nearest")
        ax.set_axis_off()
        top += h + gap
    save(figure, path)


def save(figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(figures.figure_to_array(figure)).save(path, optimize=True)
    print(f"wrote {path.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per model (default 2)")
    parser.add_argument("--output-root", type=Path, default=REPO / "outputs" / "docs-figures")
    args = parser.parse_args()
    if not os.environ.get("LENET_DATA_DIR"):
        sys.exit("Set LENET_DATA_DIR to the folder that holds MNIST/raw, e.g. ../shared/data.")
    start = time.perf_counter()
    runs = {model: train(model, args.epochs, args.output_root.resolve()) for model in MODELS}
    docs = REPO / "docs"

    classic = runs["classic"]
    panels([
        ("C1: the 6 first-layer 5x5 kernels (red positive, blue negative)",
         tensorboard_image(classic, "filters/C1")),
        ("C3: its 16 kernels, each summed over the S2 maps it reads (Table I)",
         tensorboard_image(classic, "filters/C3_summed_over_inputs")),
    ], docs / "filters.png", f"What LeNet-5 learned in {args.epochs} epochs")  # fmt: skip
    panels([
        ("C1: each row a test digit, then its 6 feature maps (28x28)",
         tensorboard_image(classic, "feature_maps/1_C1")),
        ("S2: the same maps after 2x2 trainable subsampling (14x14)",
         tensorboard_image(classic, "feature_maps/2_S2")),
    ], docs / "feature_maps.png", "LeNet-5 feature maps")  # fmt: skip

    curves = {}
    for model, label in MODELS.items():
        metrics = json.loads((runs[model] / "metrics.json").read_text())
        curves[label] = [metrics[f"probe/shift_acc_{s}px"] for s in range(5)]
        print(
            f"{model}: test/acc {metrics['test/acc']:.4f}, probe "
            + " ".join(f"{a:.4f}" for a in curves[label])
        )
    title = (
        "Translation probe: 10,000 test digits, each shifted in 8 directions\n"
        f"(after {args.epochs} epochs of training each)"
    )
    save(figures.probe_figure(curves, title=title), docs / "translation_probe.png")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
