"""Photos of handwritten digits -> 28x28 float pixels in [0, 1], by MNIST's own recipe: each digit
scaled to fit a 20x20 box (aspect kept, anti-aliased), then centred by its centre of mass. A photo
first becomes greyscale ink bright on black (dark ink on light paper is detected and inverted),
without the paper's grey level and grain. The network does its own normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from lenet_cli.errors import LenetError

FIELD = 28  # MNIST images are 28x28
BOX = 20  # the digit is scaled to fit 20x20
CENTRE = 14.0  # where MNIST's centres of mass lie: mean row and column 14.0 on the test set
INK = 0.25  # a pixel at least this far from paper towards the ink level counts as ink
PAPER_GRAIN_SIGMAS = 3.0  # paper noise up to this many standard deviations is paper


class ImageError(LenetError, title="Image error"):
    """A file that cannot be read as an image, or an image without a digit on it."""


def load_greyscale(path: str | Path) -> np.ndarray:
    """Any image file PIL reads (PNG, JPEG, BMP, ...) as float greyscale in [0, 1], shape (H, W).
    PIL rather than torchvision.io.decode_image, which reads only JPEG, PNG, GIF and WebP."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)  # phone photos are stored sideways
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                peak = 65535.0 if image.mode.startswith("I") else 1.0
                return np.clip(np.asarray(image, dtype=np.float32) / peak, 0, 1)
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                # Drawing apps save dark ink over transparent pixels: lay it on white paper.
                rgba = image.convert("RGBA")
                paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(paper, rgba)
            return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        known = {FileNotFoundError: "no such file", IsADirectoryError: "is a folder"}
        unreadable = "cannot identify" in str(error)  # PIL's words for a file that is no image
        reason = known.get(type(error), "not an image PIL can read" if unreadable else error)
        raise ImageError(f"{reason}.") from None


def _paper_and_ink(grey: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The image with ink bright, the paper level (grain included) and the ink level."""
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    if np.median(border) > 0.5:  # the edges of a photo are paper: light paper means dark ink
        grey, border = 1.0 - grey, 1.0 - border
    paper = float(np.median(border))
    grain = 1.4826 * float(np.median(np.abs(border - paper)))  # robust standard deviation
    paper += PAPER_GRAIN_SIGMAS * grain
    marked = grey[grey > paper]
    if marked.size < 2:
        return grey, paper, paper
    # Above the paper there may be faint marks too (smudges, shadows, a grey square): Otsu's
    # threshold splits them from the ink, whose typical level is then read from the ink alone.
    ink = marked[marked >= otsu_threshold(marked)]
    return grey, paper, float(np.percentile(ink, 90))


def otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """The level that best splits values into two classes (maximal between-class variance)."""
    counts, edges = np.histogram(values, bins=bins)  # over [values.min(), values.max()]
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(counts)
    above = below[-1] - below
    mass = np.cumsum(counts * centres)
    mean_below = mass / np.maximum(below, 1)
    mean_above = (mass[-1] - mass) / np.maximum(above, 1)
    between = below * above * (mean_below - mean_above) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def to_mnist(grey: np.ndarray) -> np.ndarray:
    """A greyscale photo of one digit (float, [0, 1], any size) -> a 28x28 MNIST-style image."""
    grey, paper, ink = _paper_and_ink(np.asarray(grey, dtype=np.float32))
    x = np.clip((grey - paper) / max(ink - paper, 1e-6), 0.0, 1.0)
    rows, cols = np.nonzero(x >= INK)
    if ink - paper < 0.05 or not len(rows):
        raise ImageError("no digit found: the image is blank or has almost no contrast.")
    x = x[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]

    height, width = x.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    box = np.asarray(
        Image.fromarray(np.ascontiguousarray(x)).resize(size, Image.Resampling.BILINEAR)
    )
    box = np.clip(box, 0.0, None)
    box /= max(float(box.max()), 1e-6)  # thin pen strokes come out faint: ink cores back to 1

    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    cy, cx = (np.indices(box.shape) * box).sum((1, 2)) / box.sum()  # the centre of mass
    # Integer shifts like MNIST's; clamped so that no ink falls off the field.
    top = min(max(round(CENTRE - cy), 0), FIELD - box.shape[0])
    left = min(max(round(CENTRE - cx), 0), FIELD - box.shape[1])
    field[top : top + box.shape[0], left : left + box.shape[1]] = box
    return field


def read_images(inputs: list[str]) -> tuple[list[Path], np.ndarray]:
    """The files named and the files (not hidden, not in subfolders) of the folders named, with
    their 28x28 images (N, 28, 28); a file that cannot be read is reported and skipped."""
    from lenet_cli.console import err_console

    files = []
    for path in map(Path, inputs):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        else:
            files.append(path)  # a missing file is reported with the unreadable ones
    kept, images = [], []
    for file in files:
        try:
            images.append(to_mnist(load_greyscale(file)))
            kept.append(file)
        except ImageError as error:
            err_console.print(f"[yellow]skipped[/] {file}: {error.message}", highlight=False)
    if not kept:
        raise ImageError(
            "No image could be read, so there is nothing to predict.",
            fix="Pass PNG, JPEG or BMP files, or folders that hold some.",
        )
    return kept, np.stack(images)


def save_preprocessed(folder: Path, files: list[Path], images: np.ndarray) -> None:
    """Each 28x28 image as an 8-bit greyscale PNG named after its file: what the network saw."""
    folder.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for file, image in zip(files, images, strict=True):
        name, n = f"{file.stem}.png", 1
        while name in used:  # same stem in two folders, or a.png and a.jpg
            n += 1
            name = f"{file.stem}-{n}.png"
        used.add(name)
        Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(folder / name)
