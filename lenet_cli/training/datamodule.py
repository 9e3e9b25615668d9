"""The LightningDataModule: uint8 splits held in memory (on the GPU when training there), batches
sliced from them, converted and augmented whole on their device. torchvision's RandomAffine lacks
that: it draws one set of parameters per call, so every image of a batch would move alike."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch.nn import functional as F

from lenet_cli.config import augmentation
from lenet_cli.errors import ConfigError
from lenet_cli.training.interrupts import stop_if_requested
from lenet_cli.training.mnist_files import RAW_FILES, check_idx, ensure_files, load_split


@dataclass(eq=False)
class TensorBatches:
    """(uint8 images, labels) batches sliced from in-memory tensors, resumable mid-epoch through
    Lightning's stateful-loader protocol. What DataLoader + DistributedSampler lack: a batch from
    one index instead of a per-sample collate, evaluation shares without padding, and shuffles of
    seed 1 unlike those of seed 0 (theirs seed with seed + epoch; ours with (seed, epoch) only)."""

    images: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    shuffle: bool = False
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    epoch: Callable[[], int] | None = None  # which epoch a pass is (else passes count 0, 1, ...)
    # Called before each batch: where an interrupted run stops (lenet_cli/training/interrupts.py).
    before_batch: Callable[[], None] = lambda: None

    def __post_init__(self) -> None:
        self._passes, self._epoch, self._handed_out = 0, 0, 0  # state_dict: the pass in progress
        self._resume: tuple[int, int] | None = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches_done": self._handed_out, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state.get("seed", self.seed)) == self.seed:  # else it is another shuffle order
            self._resume = int(state["epoch"]), int(state["batches_done"])

    def _indices(self, epoch: int) -> torch.Tensor:
        n = len(self.labels)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(n, generator=generator)
            per_rank = n // self.world_size  # equal shares keep DDP ranks in step
            return order[self.rank * per_rank : (self.rank + 1) * per_rank]
        return torch.arange(self.rank, n, self.world_size)

    def __len__(self) -> int:
        n = len(self.labels)
        n = n // self.world_size if self.shuffle else len(range(self.rank, n, self.world_size))
        return math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch() if self.epoch else self._passes
        # A checkpoint from the end of an epoch: Lightning has moved on to the next one.
        skip = self._resume[1] if self._resume and self._resume[0] == epoch else 0
        self._passes, self._resume = epoch + 1, None
        self._epoch, self._handed_out = epoch, skip
        for rows in self._indices(epoch).to(self.images.device).split(self.batch_size)[skip:]:
            self.before_batch()
            self._handed_out += 1
            yield self.images[rows], self.labels[rows]


def resample(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Each image of x (N, C, H, W) through its own affine_grid matrix (N, 2, 3); zeros outside."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def augment_batch(x: torch.Tensor, max_shift: float, max_rotation: float) -> torch.Tensor:
    """Random shift (pixels) and rotation (degrees) per image, applied to a float batch at once."""
    n, _, h, w = x.shape
    angle = (torch.rand(n, device=x.device) * 2 - 1) * math.radians(max_rotation)
    shift = (torch.rand(n, 2, device=x.device) * 2 - 1) * max_shift
    cos, sin = torch.cos(angle), torch.sin(angle)
    rows = (cos, -sin, shift[:, 0] * 2 / w, sin, cos, shift[:, 1] * 2 / h)
    return resample(x, torch.stack(rows, 1).view(n, 2, 3))


def distortion_matrices(
    shift: torch.Tensor,
    scale: torch.Tensor,
    squeeze: torch.Tensor,
    shear: torch.Tensor,
    height: int,
    width: int,
) -> torch.Tensor:
    """The affine_grid matrices (N, 2, 3) of per-image distortions. In pixels from the centre (x
    right, y down), the ink at (x, y) moves to x' = s(1 - q)x + k s(1 + q)y + shift[:, 0] and
    y' = s(1 + q)y + shift[:, 1] (s scale, q squeeze, k shear: 0.5 puts the bottom half right).
    affine_grid wants the inverse map, in units where each side spans [-1, 1]."""
    a = 1 / (scale * (1 - squeeze))  # inverse horizontal factor
    b = 1 / (scale * (1 + squeeze))  # inverse vertical factor
    tu, tv = shift[:, 0] * 2 / width, shift[:, 1] * 2 / height  # the shift in normalised units
    k = shear * height / width  # x' = x + k * y, in normalised units
    # x_in = a * (x' - tu - k * (y' - tv)) and y_in = b * (y' - tv)
    rows = (a, -a * k, a * (k * tv - tu), torch.zeros_like(a), b, -b * tv)
    return torch.stack(rows, 1).view(-1, 2, 3)


def distort_batch(
    x: torch.Tensor,
    translate: float,
    scale: float,
    squeeze: float,
    shear: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The 1998 paper's distortions (LeCun, Bottou, Bengio, Haffner), one per image of the float
    batch x, each drawn uniformly: a shift in [-translate, translate] px per axis, a scale in
    [1 - scale, 1 + scale], a squeeze in [-squeeze, squeeze], a shear in [-shear, shear]."""
    n, _, h, w = x.shape
    d = torch.rand(n, 5, device=x.device, dtype=x.dtype, generator=generator) * 2 - 1
    theta = distortion_matrices(
        d[:, :2] * translate, 1 + d[:, 2] * scale, d[:, 3] * squeeze, d[:, 4] * shear, h, w
    )
    return resample(x, theta)


# conf/data/mnist.yaml's data.affine, for a DataModule made in Python without it.
AFFINE_DEFAULTS = {"translate": 2.0, "scale": 0.1, "squeeze": 0.1, "shear": 0.2}


class LeNetDataModule(pl.LightningDataModule):
    """MNIST, Fashion-MNIST or KMNIST from idx files. Batches leave the loaders as uint8 (4x less
    to copy to a GPU), floats in [0, 1] after the transfer; the network normalises them."""

    def __init__(
        self,
        dataset: str = "MNIST",
        root: str = "data",
        download: bool = True,
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        split_seed: int = 0,
        augment: str | bool = "none",
        max_shift: float = 2.0,
        max_rotation: float = 10.0,
        affine: Mapping[str, float] | None = None,
        on_device: str | bool = "auto",
        num_classes: int = 10,
        seed: int = 0,
        **_: object,  # name, image_size, channels, mean, std, classes: for the model and reports
    ) -> None:
        super().__init__()
        self.dataset, self.root, self.download = dataset, root, download
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed = val_size, split_seed
        self.augment = augmentation(augment)  # none, shift_rotate or affine (true/false read)
        self.max_shift, self.max_rotation = max_shift, max_rotation
        self.affine = {k: float((affine or {}).get(k, v)) for k, v in AFFINE_DEFAULTS.items()}
        self.on_device, self.num_classes, self.seed = on_device, num_classes, seed
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._train_batches: TensorBatches | None = None
        self._train_position: dict[str, int] | None = None  # restored, for a loader not yet made

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
        generator = torch.Generator().manual_seed(self.split_seed)
        order = torch.randperm(len(labels), generator=generator)
        val, train = order[: self.val_size], order[self.val_size :]
        self.splits = {
            "train": (images[train], labels[train]),
            "val": (images[val], labels[val]),
            "test": load_split(raw, "test", self.num_classes),
        }
        if self.trainer is not None:  # the whole data set moves once; batches are sliced there
            device = self.trainer.strategy.root_device
            if self.on_device is True or (self.on_device == "auto" and device.type != "cpu"):
                self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self.splits.items()}

    def planned_sizes(self) -> dict[str, int]:
        """Images in train/val/test, from the label files' headers (before setup loads them)."""
        raw = ensure_files(self.root, self.dataset, download=False)
        train, test = (check_idx(raw / RAW_FILES[split][1], 1)[0] for split in ("train", "test"))
        return {"train": train - self.val_size, "val": self.val_size, "test": test}

    def _batches(self, split: str, train: bool) -> TensorBatches:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        size = self.batch_size if train else self.eval_batch_size
        batches = TensorBatches(*self.splits[split], size, train, self.seed, rank, world)
        if train and trainer is not None:
            batches.epoch = lambda: trainer.current_epoch  # restored from a checkpoint too
            batches.before_batch = lambda: stop_if_requested(trainer)
        return batches

    def train_dataloader(self) -> TensorBatches:
        self._train_batches = self._batches("train", train=True)
        if self._train_position is not None:
            self._train_batches.load_state_dict(self._train_position)
            self._train_position = None
        return self._train_batches

    # The training loader's position also travels as the DataModule's own state. Lightning
    # (checked on 2.6.6) restores a stateful loader only when it builds it after loading the
    # checkpoint; `trainer.estimated_stepping_batches` (OneCycle, cosine per step) builds it
    # first. LightningDataModule.load_state_dict is called in either order.
    def state_dict(self) -> dict[str, Any]:
        return {"train_batches": self._train_batches.state_dict()} if self._train_batches else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        position = state_dict.get("train_batches")
        if position is not None and self._train_batches is not None:
            self._train_batches.load_state_dict(position)
        else:
            self._train_position = position

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", train=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", train=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        x = images.float().div_(255)
        training = self.trainer is not None and self.trainer.training  # only training distorts
        if training and self.augment == "shift_rotate":
            x = augment_batch(x, self.max_shift, self.max_rotation)
        elif training and self.augment == "affine":
            x = distort_batch(x, **self.affine)
        # Lightning converts a batch to a true precision's dtype (bf16-true, 16-true, 64-true)
        # before the transfer hooks, when ours is still uint8, which it leaves alone.
        return (self.trainer.precision_plugin.convert_input(x) if self.trainer else x), labels
