"""MNIST-format idx files on disk: found (or unpacked, or downloaded), checked, and read.

The four files of a data set live in <root>/<dataset>/raw/, as torchvision lays them out. Every
check here reads only headers and sizes, so a missing or truncated file is reported before any
training starts.
"""

from __future__ import annotations

import gzip
import math
import shutil
from pathlib import Path

import numpy as np
import torch

from lenet_cli.config import DATASETS
from lenet_cli.errors import ConfigError, DataError

RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def raw_folder(root: str | Path, dataset: str) -> Path:
    return Path(root) / dataset / "raw"


def _missing_files(raw: Path) -> list[str]:
    names = [name for pair in RAW_FILES.values() for name in pair]
    missing = []
    for name in names:
        path, packed = raw / name, raw / f"{name}.gz"
        if not path.exists() and packed.exists():  # user dropped the official .gz files here
            with gzip.open(packed, "rb") as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
        if not path.exists():
            missing.append(name)
    return missing


def ensure_files(root: str | Path, dataset: str, download: bool) -> Path:
    """Make sure the four idx files are under <root>/<dataset>/raw/, downloading if allowed."""
    if dataset not in DATASETS:
        raise ConfigError(
            f"data.dataset={dataset!r} is not supported.", fix=f"Use one of {DATASETS}."
        )
    raw = raw_folder(root, dataset)
    missing = _missing_files(raw)
    if not missing:
        return _checked(raw)
    reason = "downloading is off (data.download=false)"
    if download:
        import torchvision

        try:
            for train in (True, False):
                getattr(torchvision.datasets, dataset)(str(root), train=train, download=True)
        except Exception as error:  # no network, mirror down, disk full...
            reason = (
                f"the download failed ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
            )
        missing = _missing_files(raw)
        if not missing:
            return _checked(raw)
    raise DataError(
        f"{dataset} files not found in {raw.resolve()} and {reason}.",
        fix=(
            f"Put these four files (or their .gz originals) in {raw.resolve()}:\n  "
            + "\n  ".join(missing)
            + "\nor point the data root elsewhere: LENET_DATA_DIR=/path/to/data (the folder that "
            f"holds {dataset}/raw/), or data.root=/path/to/data."
        ),
    )


def check_idx(path: Path, magic: int) -> list[int]:
    """The dimensions in an idx file's header, checked against its magic number and its size."""
    ndim = 3 if magic == IMAGES_MAGIC else 1
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
    if len(head) < header or int.from_bytes(head[:4], "big") != magic:
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


def _checked(raw: Path) -> Path:
    """Headers and sizes of the four files (cheap: no data is read), before any training starts."""
    for images, labels in RAW_FILES.values():
        check_idx(raw / images, IMAGES_MAGIC)
        check_idx(raw / labels, LABELS_MAGIC)
    return raw


def read_idx(path: Path, magic: int) -> torch.Tensor:
    """Read an idx file (images: N x rows x cols, labels: N), checked first."""
    dims = check_idx(path, magic)
    array = np.fromfile(path, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)
    return torch.from_numpy(array)


def load_split(raw: Path, split: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 1, H, W) and int64 labels (N,) of one split, checked for consistency."""
    image_file, label_file = RAW_FILES[split]
    images = read_idx(raw / image_file, IMAGES_MAGIC).unsqueeze(1)
    labels = read_idx(raw / label_file, LABELS_MAGIC).long()
    if len(images) != len(labels):
        raise DataError(
            f"{raw / image_file} holds {len(images):,} images but {label_file} "
            f"{len(labels):,} labels.",
            fix="The two files come from different data sets or one is damaged: replace both.",
        )
    if len(labels) and int(labels.max()) >= num_classes:
        raise DataError(
            f"{raw / label_file} has label {int(labels.max())} >= {num_classes} classes.",
            fix="Replace the file, or set data.num_classes to match it.",
        )
    return images, labels


def split_size(raw: Path, split: str) -> int:
    """How many images a split holds, read from its label file's header (nothing loaded)."""
    return check_idx(raw / RAW_FILES[split][1], LABELS_MAGIC)[0]
