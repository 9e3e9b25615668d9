"""MNIST-format idx files in <root>/<dataset>/raw/ (torchvision's layout): found, unpacked or
downloaded, checked, then read by torchvision. What its readers lack: they read a whole file, then
check its magic number with bare asserts (no file name; gone under `python -O`), and a truncated
one ends in a reshape error. check_idx reads headers and sizes only and names the bad file."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
import torchvision
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.datasets.utils import extract_archive

from lenet_cli.errors import DataError

RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _missing_files(raw: Path) -> list[str]:
    names = [name for pair in RAW_FILES.values() for name in pair]
    for name in names:
        packed = raw / f"{name}.gz"
        if not (raw / name).exists() and packed.exists():  # the official .gz files dropped here
            extract_archive(packed)
    return [name for name in names if not (raw / name).exists()]


def ensure_files(root: str | Path, dataset: str, download: bool) -> Path:
    """The four idx files under <root>/<dataset>/raw/ (downloaded if allowed), headers checked.
    `dataset` is one of config.DATASETS (config.validate refuses any other)."""
    raw = Path(root) / dataset / "raw"
    missing = _missing_files(raw)
    reason = "downloading is off (data.download=false)"
    if missing and download:
        try:  # torchvision fetches all four files; train=False then parses only the small split
            getattr(torchvision.datasets, dataset)(str(root), train=False, download=True)
        except Exception as error:  # no network, mirror down, disk full...
            first_line = str(error).partition("\n")[0][:120]  # (an error may have no message)
            reason = f"the download failed ({type(error).__name__}: {first_line})"
        missing = _missing_files(raw)
    if missing:
        raise DataError(
            f"{dataset} files not found in {raw.resolve()} and {reason}.",
            fix=(
                f"Put these four files (or their .gz originals) in {raw.resolve()}:\n  "
                + "\n  ".join(missing)
                + "\nor point the data root elsewhere: LENET_DATA_DIR=/path/to/data (the folder "
                f"that holds {dataset}/raw/), or data.root=/path/to/data."
            ),
        )
    for split in RAW_FILES:
        _checked_split(raw, split)
    return raw


def check_idx(path: Path, ndim: int) -> list[int]:
    """The dimensions in the header of an idx file of bytes, checked against its magic number
    (0x08 for unsigned bytes, then ndim) and its size."""
    header = 4 + 4 * ndim
    fix = f"Replace {path.name} with an intact copy (delete it and lenet-train downloads it again)."
    try:
        with open(path, "rb") as f:
            head = f.read(header)
        size = path.stat().st_size
    except OSError as error:
        raise DataError(
            f"Cannot read {path}: {error.strerror}.", fix="Check its permissions."
        ) from None
    if len(head) < header or int.from_bytes(head[:4], "big") != 0x800 + ndim:
        kind = "images" if ndim == 3 else "labels"
        raise DataError(f"{path} is not an idx file of {kind}.", fix=fix)
    dims = [int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(dims)
    if size != expected:
        raise DataError(
            f"{path} is truncated or corrupt: its header promises {'x'.join(map(str, dims))} "
            f"({expected:,} bytes) but the file has {size:,} bytes.",
            fix=fix,
        )
    return dims


def _checked_split(raw: Path, split: str) -> tuple[Path, Path]:
    """A split's image and label files, headers and sizes checked (cheap: no data is read)."""
    images, labels = (raw / name for name in RAW_FILES[split])
    n_images, n_labels = check_idx(images, 3)[0], check_idx(labels, 1)[0]
    if n_images != n_labels:
        raise DataError(
            f"{images} holds {n_images:,} images but {labels.name} {n_labels:,} labels.",
            fix="The two files come from different data sets or one is damaged: replace both.",
        )
    return images, labels


# A sweep's jobs run one after another in one process: each split is parsed once (0.1-0.4 s for
# MNIST's training set), not once a job. The key holds each file's mtime and size (a replaced
# file is read again); two entries keep one data set's train and test splits.
@functools.lru_cache(maxsize=2)
def _read_split(images: Path, labels: Path, stamps: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    return read_image_file(str(images)).unsqueeze(1), read_label_file(str(labels))


def load_split(raw: Path, split: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 1, H, W) and int64 labels (N,) of one split, checked for consistency.
    Shared by every caller in the process: copy them before changing them in place."""
    files = _checked_split(raw, split)
    stamps = tuple((s.st_mtime_ns, s.st_size) for s in (f.stat() for f in files))
    images, labels = _read_split(*(f.resolve() for f in files), stamps)
    if len(labels) and int(labels.max()) >= num_classes:
        raise DataError(
            f"{files[1]} has label {int(labels.max())} >= {num_classes} classes.",
            fix="Replace the file, or set data.num_classes to match it.",
        )
    return images, labels
