"""Pictures of what a network learned, from numpy arrays. Grids (filters, feature maps) are numpy
and a colormap lookup: cheap enough for every epoch. Figures with text, drawn once a run, use
matplotlib's object API on the Agg canvas (no pyplot: no global state, no display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

TILE_PIXELS = 56  # feature maps are enlarged (nearest neighbour) to about this many pixels a side
GAP = 2  # pixels between tiles
BACKGROUND = 255  # white gaps


def _colour(values: np.ndarray, cmap: str) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB through a matplotlib colormap (a table lookup, no figure)."""
    from matplotlib import colormaps

    return colormaps[cmap](np.clip(values, 0.0, 1.0), bytes=True)[..., :3]


def assemble(tiles: np.ndarray, columns: int) -> np.ndarray:
    """RGB tiles (n, h, w, 3), enlarged to about TILE_PIXELS, `columns` a row, as one image with
    GAP white pixels between tiles (each tile padded below and right, the last gap cut off) and
    the empty cells of the last row white."""
    n, h, w, _ = tiles.shape
    rows, scale = -(-n // columns), max(1, TILE_PIXELS // max(h, w))
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    gaps = ((0, rows * columns - n), (0, GAP), (0, GAP), (0, 0))
    tiles = np.pad(tiles, gaps, constant_values=BACKGROUND)
    h, w = tiles.shape[1:3]
    grid = tiles.reshape(rows, columns, h, w, 3).transpose(0, 2, 1, 3, 4)
    return grid.reshape(rows * h, columns * w, 3)[:-GAP, :-GAP]


def filters_image(kernels: np.ndarray, columns: int = 8) -> np.ndarray:
    """Kernels (n, h, w) as a grid, each scaled on its own: red positive, blue negative, white 0."""
    peak = np.abs(kernels).max(axis=(1, 2), keepdims=True)  # zero -> 0.5: the sign shows
    rgb = _colour(0.5 + 0.5 * kernels / np.where(peak > 0, peak, 1.0), "RdBu_r")
    return assemble(rgb, min(columns, len(kernels)))


def feature_maps_image(digits: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """One row per digit (n, H, W): the digit, grey at the maps' size, then its maps (n, c, h, w),
    each channel scaled over all digits, so a column compares one filter across digits."""
    n, channels, h, w = maps.shape
    ys = (np.arange(h) * digits.shape[1] / h).astype(int)
    xs = (np.arange(w) * digits.shape[2] / w).astype(int)
    small = digits[:, ys][:, :, xs]  # nearest-neighbour resize to h x w
    first = _colour(small, "gray")[:, None]
    low, high = maps.min(axis=(0, 2, 3), keepdims=True), maps.max(axis=(0, 2, 3), keepdims=True)
    rest = _colour((maps - low) / np.where(high > low, high - low, 1.0), "viridis")
    return assemble(np.concatenate([first, rest], axis=1).reshape(-1, h, w, 3), channels + 1)


def figure_to_array(figure) -> np.ndarray:
    """Render a matplotlib Figure with the Agg canvas; returns RGB uint8 (h, w, 3)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _figure(width: float, height: float, layout: str | None = "constrained"):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout=layout)


def mistakes_figure(outcome: Mapping[str, np.ndarray], columns: int = 8):
    """The wrong answers the test kept, 'true -> predicted' and the confidence above each. One
    image and a few text labels on a single Axes: a grid of subplots costs ten times more."""
    images, true, predicted = outcome["images"], outcome["true"], outcome["predicted"]
    scale, band, gap, top = 2, 24, 6, 22  # enlargement, label band, gap, title band (pixels)
    images = np.clip(images, 0, 1).repeat(scale, 1).repeat(scale, 2)
    n, tile_h, tile_w = images.shape
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    height = top + rows * (band + tile_h) + (rows - 1) * gap
    width = columns * tile_w + (columns - 1) * gap
    canvas = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    figure = _figure(max(width, 240) / 100, height / 100, layout=None)
    ax = figure.add_axes((0, 0, 1, 1))
    for i in range(n):
        y = top + (i // columns) * (band + tile_h + gap) + band
        x = (i % columns) * (tile_w + gap)
        canvas[y : y + tile_h, x : x + tile_w] = (255 * images[i])[..., None].astype(np.uint8)
        label = f"{true[i]} → {predicted[i]}\n{outcome['confidence'][i]:.0%}"
        ax.text(x + tile_w / 2, y - 2, label, ha="center", va="bottom", fontsize=7, linespacing=1.0)
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    title = "worst mistakes: true → predicted (confidence)" if n else "no mistakes"
    ax.text(width / 2, 2, title, ha="center", va="top", fontsize=8)
    return figure


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str] | None = None):
    """Counts of (true, predicted) pairs; colour on a log scale so that rare confusions show."""
    k = len(matrix)
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    figure = _figure(0.5 * k + 1.6, 0.5 * k + 1.2)
    ax = figure.add_subplot()
    ax.imshow(np.log1p(matrix), cmap="Blues")
    peak = np.log1p(matrix.max()) if matrix.size else 0
    for t, p in zip(*np.nonzero(matrix), strict=True):
        colour = "white" if np.log1p(matrix[t, p]) > 0.6 * peak else "black"
        ax.text(p, t, str(int(matrix[t, p])), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(k), names, fontsize=8, rotation=90 if max(map(len, names)) > 2 else 0)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true")
    total = int(matrix.sum())
    accuracy = np.trace(matrix) / max(total, 1)
    ax.set_title(f"confusion matrix ({total:,} digits, {accuracy:.2%} correct)", fontsize=9)
    return figure


def test_figures(outcome: Mapping[str, np.ndarray], class_names: Sequence[str] | None = None):
    """LeNetModule.test_outcome drawn, under the TensorBoard tags lenet-train and lenet-eval
    share: the confusion matrix, and the worst mistakes when the test kept some."""
    drawn = {"confusion_matrix": confusion_figure(outcome["confusion"], class_names)}
    if "images" in outcome:
        drawn["mistakes/test"] = mistakes_figure(outcome)
    return drawn


def probe_figure(curves: Mapping[str, Sequence[float]], title: str = "translation probe"):
    """Accuracy against shift (0, 1, 2... pixels, 8 directions averaged), one line per network."""
    figure = _figure(6.0, 3.8)
    ax = figure.add_subplot()
    for name, accuracies in curves.items():
        ax.plot(range(len(accuracies)), [100 * a for a in accuracies], marker="o", label=name)
    ax.set_xlabel("shift of every test digit (pixels, 8 directions averaged)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(range(max((len(a) for a in curves.values()), default=0)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return figure
