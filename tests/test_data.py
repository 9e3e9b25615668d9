"""MNIST-format files: checked headers, clear errors, in-memory batches."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch
from conftest import write_mnist

from lenet_cli.errors import DataError
from lenet_cli.training.datamodule import LeNetDataModule, TensorBatches
from lenet_cli.training.mnist_files import ensure_files, load_split


def test_reads_the_files_the_tests_write(tmp_path: Path) -> None:
    raw = ensure_files(write_mnist(tmp_path, 300, 100), "MNIST", download=False)
    images, labels = load_split(raw, "train", 10)
    assert images.shape == (300, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (300,) and int(labels.max()) <= 9


def test_missing_files_name_the_folder_and_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        ensure_files(tmp_path, "MNIST", download=False)
    error = caught.value
    assert str((tmp_path / "MNIST" / "raw").resolve()) in error.message
    for split in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            assert f"{split}-{kind}-ubyte" in error.fix
    assert "LENET_DATA_DIR" in error.fix


def test_gz_originals_are_unpacked(tmp_path: Path) -> None:
    raw = write_mnist(tmp_path, 50, 20) / "MNIST" / "raw"
    for f in list(raw.iterdir()):
        (raw / f"{f.name}.gz").write_bytes(gzip.compress(f.read_bytes()))
        f.unlink()
    ensure_files(tmp_path, "MNIST", download=False)
    assert len(load_split(raw, "test", 10)[0]) == 20


def test_truncated_file_is_detected(tmp_path: Path) -> None:
    raw = write_mnist(tmp_path, 50, 20) / "MNIST" / "raw"
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_split(raw, "train", 10)


def test_wrong_magic_is_detected(tmp_path: Path) -> None:
    raw = write_mnist(tmp_path, 50, 20) / "MNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="not an idx file"):
        load_split(raw, "test", 10)


def test_batches_cover_each_sample_once_and_reshuffle_each_epoch() -> None:
    images = torch.arange(103, dtype=torch.uint8).view(103, 1, 1, 1)
    labels = torch.arange(103)
    batches = TensorBatches(images, labels, 10, shuffle=True, seed=3)
    first = torch.cat([y for _, y in batches])
    second = torch.cat([y for _, y in batches])
    assert len(batches) == 11
    assert sorted(first.tolist()) == list(range(103)) == sorted(second.tolist())
    assert not torch.equal(first, second)
    again = TensorBatches(images, labels, 10, shuffle=True, seed=3)
    assert torch.equal(torch.cat([y for _, y in again]), first)  # same seed, same order


def test_ranks_share_the_evaluation_split_without_padding() -> None:
    labels = torch.arange(11)
    images = labels.to(torch.uint8).view(11, 1, 1, 1)
    parts = [
        torch.cat([y for _, y in TensorBatches(images, labels, 4, rank=r, world_size=2)])
        for r in (0, 1)
    ]
    assert sorted(torch.cat(parts).tolist()) == list(range(11))


def test_datamodule_splits_and_float_batches(tiny_data: Path) -> None:
    dm = LeNetDataModule(root=str(tiny_data), val_size=200, batch_size=64, download=False)
    dm.prepare_data()
    dm.setup("fit")
    assert [len(dm.splits[split][1]) for split in ("train", "val", "test")] == [1000, 200, 400]
    x, y = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.dtype == torch.float32 and x.shape == (64, 1, 28, 28)
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_training_batches_follow_lightnings_stateful_loader_protocol() -> None:
    from lightning_fabric.utilities.types import _Stateful  # what Lightning checks with isinstance

    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1)
    batches = TensorBatches(images, torch.arange(50), 10, shuffle=True, seed=5)
    assert isinstance(batches, _Stateful)
    whole = [y for _, y in batches]  # epoch 0, uninterrupted
    assert batches.state_dict() == {"epoch": 0, "batches_done": 5, "seed": 5}
    epoch_1 = [y for _, y in batches]

    # Interrupted after three batches of epoch 1: a fresh loader resumes at the fourth.
    interrupted = TensorBatches(images, torch.arange(50), 10, shuffle=True, seed=5)
    list(interrupted)
    stream = iter(interrupted)
    seen = [next(stream)[1] for _ in range(3)]
    state = interrupted.state_dict()
    assert state == {"epoch": 1, "batches_done": 3, "seed": 5}
    resumed = TensorBatches(images, torch.arange(50), 10, shuffle=True, seed=5, epoch=lambda: 1)
    resumed.load_state_dict(state)
    rest = [y for _, y in resumed]
    assert [t.tolist() for t in seen + rest] == [t.tolist() for t in epoch_1]
    assert whole[0].tolist() != epoch_1[0].tolist()


def test_a_checkpoint_from_an_epochs_end_resumes_at_the_next_epochs_start() -> None:
    images = torch.arange(30, dtype=torch.uint8).view(30, 1, 1, 1)
    done = TensorBatches(images, torch.arange(30), 10, shuffle=True, seed=1)
    list(done)  # epoch 0 complete: Lightning restarts at epoch 1
    resumed = TensorBatches(images, torch.arange(30), 10, shuffle=True, seed=1, epoch=lambda: 1)
    resumed.load_state_dict(done.state_dict())
    fresh = TensorBatches(images, torch.arange(30), 10, shuffle=True, seed=1, epoch=lambda: 1)
    assert [y.tolist() for _, y in resumed] == [y.tolist() for _, y in fresh]
    assert len(list(resumed)) == 3  # and every later pass is whole
