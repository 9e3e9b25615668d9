"""MNIST-format data: checked idx files, in-memory uint8 splits, batches sliced from tensors.

Training never pays a per-sample PIL transform: each split lives in memory as one uint8 tensor
(on the GPU when training there), a batch is an index into it, and the float conversion and the
optional augmentation happen on the whole batch after it reaches the device.
"""

from __future__ import annotations

import gzip
import math
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.nn import functional as F

from lenet_cli.errors import ConfigError, DataError

RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DATASETS = ("MNIST", "FashionMNIST", "KMNIST")
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


class TensorBatches:
    """An iterable of (uint8 images, labels) batches sliced from in-memory tensors.

    Shuffling draws a new permutation each epoch from (seed, epoch), so the order depends on
    nothing but the seed and the epoch number; with several processes each rank takes an equal,
    disjoint share of the permutation (training) or of the split in order (evaluation, no padding).
    `position`, when given, says which epoch is starting and how many of its batches are already
    done (a run resumed mid-epoch): those batches are skipped, so nothing is seen twice.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        position: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.position = position
        self.epoch = 0

    def _indices(self, epoch: int) -> torch.Tensor | None:
        n = len(self.labels)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(n, generator=generator)
            per_rank = n // self.world_size  # equal shares keep DDP ranks in step
            return order[self.rank * per_rank : (self.rank + 1) * per_rank]
        if self.world_size == 1:
            return None
        return torch.arange(self.rank, n, self.world_size)

    def __len__(self) -> int:
        n = len(self.labels)
        n = n // self.world_size if self.shuffle else len(range(self.rank, n, self.world_size))
        return math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, done = self.position() if self.position else (self.epoch, 0)
        self.epoch = epoch + 1
        indices = self._indices(epoch)
        first = done * self.batch_size
        if indices is None:
            for start in range(first, len(self.labels), self.batch_size):
                stop = start + self.batch_size
                yield self.images[start:stop], self.labels[start:stop]
            return
        indices = indices.to(self.images.device)
        for start in range(first, len(indices), self.batch_size):
            batch = indices[start : start + self.batch_size]
            yield self.images[batch], self.labels[batch]


def augment_batch(x: torch.Tensor, max_shift: float, max_rotation: float) -> torch.Tensor:
    """Random shift (pixels) and rotation (degrees) per image, applied to a float batch at once."""
    n, _, h, w = x.shape
    angle = (torch.rand(n, device=x.device) * 2 - 1) * math.radians(max_rotation)
    shift = (torch.rand(n, 2, device=x.device) * 2 - 1) * max_shift
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [
            torch.stack([cos, -sin, shift[:, 0] * 2 / w], 1),
            torch.stack([sin, cos, shift[:, 1] * 2 / h], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


class LeNetDataModule(pl.LightningDataModule):
    """MNIST, Fashion-MNIST or KMNIST from idx files, as uint8 tensors in memory.

    Batches leave the loaders as uint8 (4x less to copy to a GPU) and become floats in [0, 1]
    in on_after_batch_transfer; the network normalises them itself.
    """

    def __init__(
        self,
        dataset: str = "MNIST",
        root: str = "data",
        download: bool = True,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        split_seed: int = 0,
        num_workers: int = 0,
        augment: bool = False,
        max_shift: float = 2.0,
        max_rotation: float = 10.0,
        on_device: str | bool = "auto",
        num_classes: int = 10,
        seed: int = 0,
        **_: object,  # name, image_size, channels, mean, std, classes: for the model and reports
    ) -> None:
        super().__init__()
        self.dataset, self.root, self.download = dataset, root, download
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed = val_size, split_seed
        self.num_workers = num_workers
        self.augment, self.max_shift, self.max_rotation = augment, max_shift, max_rotation
        self.on_device, self.num_classes, self.seed = on_device, num_classes, seed
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def prepare_data(self) -> None:
        ensure_files(self.root, self.dataset, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        raw = ensure_files(self.root, self.dataset, download=False)
        images, labels = load_split(raw, "train", self.num_classes)
        if not 0 <= self.val_size < len(labels):
            raise ConfigError(
                f"data.val_size={self.val_size} but the training set has {len(labels):,} images.",
                fix=f"Choose 0 <= data.val_size < {len(labels)}.",
            )
        order = torch.randperm(
            len(labels), generator=torch.Generator().manual_seed(self.split_seed)
        )
        val, train = order[: self.val_size], order[self.val_size :]
        self.splits = {
            "train": (images[train], labels[train]),
            "val": (images[val], labels[val]),
            "test": load_split(raw, "test", self.num_classes),
        }
        device = self._target_device()
        if device is not None:  # the whole data set moves once; batches are sliced there
            self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self.splits.items()}

    def _target_device(self) -> torch.device | None:
        if self.trainer is None or self.on_device is False:
            return None
        device = self.trainer.strategy.root_device
        if self.on_device == "auto" and device.type == "cpu":
            return None
        return device

    def split_size(self, split: str) -> int:
        return len(self.splits[split][1])

    def _batches(self, split: str, train: bool) -> TensorBatches:
        images, labels = self.splits[split]
        rank, world = (
            (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        )
        size = self.batch_size if train else self.eval_batch_size
        return TensorBatches(
            images, labels, size, shuffle=train, seed=self.seed, rank=rank, world_size=world
        )

    def train_dataloader(self) -> TensorBatches:
        batches = self._batches("train", train=True)
        if self.trainer is not None:
            # The trainer's own progress (restored from a checkpoint on resume) decides the epoch
            # and the batches already done; Lightning resets `ready` to `completed` on restart.
            trainer = self.trainer
            batches.position = lambda: (
                trainer.current_epoch,
                trainer.fit_loop.epoch_loop.batch_progress.current.ready,
            )
        return batches

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", train=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", train=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        x = images.float().div_(255)
        if self.augment and self.trainer is not None and self.trainer.training:
            x = augment_batch(x, self.max_shift, self.max_rotation)
        return x, labels
