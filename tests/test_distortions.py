"""data.augment=affine: the 1998 paper's distortions (translation, scaling, squeezing, horizontal
shearing), checked on images whose answer is known, then through the DataModule and lenet-train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import TINY, compose_train, run_cli, run_folders

from lenet_cli.config import AUGMENTATIONS, augmentation, compose_checked, validate
from lenet_cli.errors import ConfigError
from lenet_cli.training.datamodule import (
    LeNetDataModule,
    augment_batch,
    distort_batch,
    distortion_matrices,
    resample,
)

SHAPES = [(28, 28), (20, 40), (40, 20)]  # square, wide and tall: the units must stay right


def _one(shape: tuple[int, int], shift=(0.0, 0.0), scale=1.0, squeeze=0.0, shear=0.0):
    """A single image of `shape` distorted by exactly these parameters: a function of it."""
    h, w = shape
    theta = distortion_matrices(
        torch.tensor([shift]),
        torch.tensor([scale]),
        torch.tensor([squeeze]),
        torch.tensor([shear]),
        height=h,
        width=w,
    )
    return lambda image: resample(image.view(1, 1, h, w), theta)[0, 0]


def _square(h: int = 28, w: int = 28, side: int = 8) -> torch.Tensor:
    """A centred square of ink, side pixels across (its centre on the image's centre)."""
    image = torch.zeros(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image[top : top + side, left : left + side] = 1.0
    return image


def _bounding_box(image: torch.Tensor) -> tuple[int, int]:
    """Height and width of the pixels at least half inked."""
    ink = image >= 0.5
    rows, cols = ink.any(1).nonzero(), ink.any(0).nonzero()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def _centroids(batch: torch.Tensor) -> torch.Tensor:
    """(N, 2): each image's ink centroid (x, y) in pixels from the image centre."""
    n, _, h, w = batch.shape
    mass = batch.sum((1, 2, 3))
    ys = torch.arange(h, dtype=batch.dtype) - (h - 1) / 2
    xs = torch.arange(w, dtype=batch.dtype) - (w - 1) / 2
    x = (batch.sum((1, 2)) * xs).sum(1) / mass
    y = (batch.sum((1, 3)) * ys).sum(1) / mass
    return torch.stack([x, y], 1)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_one_pixel_shift_moves_a_bar_by_exactly_one_pixel(shape: tuple[int, int]) -> None:
    h, w = shape
    column = torch.zeros(h, w)
    column[:, w // 3] = 1.0
    right = _one(shape, shift=(1.0, 0.0))(column)
    expected = torch.zeros(h, w)
    expected[:, w // 3 + 1] = 1.0  # one column to the right, nothing else
    torch.testing.assert_close(right, expected, atol=1e-5, rtol=0)

    row = torch.zeros(h, w)
    row[h // 3, :] = 1.0
    down = _one(shape, shift=(0.0, 1.0))(row)
    expected = torch.zeros(h, w)
    expected[h // 3 + 1, :] = 1.0  # one row down
    torch.testing.assert_close(down, expected, atol=1e-5, rtol=0)


def test_nothing_to_draw_changes_nothing() -> None:
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(distort_batch(x, 0.0, 0.0, 0.0, 0.0), x, atol=1e-5, rtol=0)


def test_scaling_by_one_and_a_half_grows_the_ink_two_and_a_quarter_times() -> None:
    square = _square(side=8)
    bigger = _one((28, 28), scale=1.5)(square)
    assert float(bigger.sum() / square.sum()) == pytest.approx(2.25, rel=0.01)
    assert _bounding_box(bigger) == (12, 12)  # 8 px -> 12 px along each side
    assert _centroids(bigger.view(1, 1, 28, 28)).abs().max() < 1e-4  # about the centre


@pytest.mark.parametrize(("squeeze", "box"), [(0.25, (10, 6)), (-0.25, (6, 10))])
def test_a_squeeze_makes_a_square_taller_and_narrower_or_the_reverse(
    squeeze: float, box: tuple[int, int]
) -> None:
    squeezed = _one((28, 28), squeeze=squeeze)(_square(side=8))
    assert _bounding_box(squeezed) == box  # (height, width): 8 x (1 + q) tall, 8 x (1 - q) wide
    assert float(squeezed.sum()) == pytest.approx(64 * (1 - squeeze**2), rel=0.01)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_shear_slants_a_vertical_bar_by_k_pixels_per_row(shape: tuple[int, int]) -> None:
    h, w, k = *shape, 0.3
    bar = torch.zeros(h, w)
    bar[:, w // 2] = 1.0
    slanted = _one(shape, shear=k)(bar)
    cols = torch.arange(w, dtype=torch.float32)
    for row in range(2, h - 2):  # the bar's ink in each row: centred k px further per row down
        centre = float((slanted[row] * cols).sum() / slanted[row].sum())
        assert centre == pytest.approx(w // 2 + k * (row - (h - 1) / 2), abs=1e-3), row


def test_random_distortions_differ_per_image_and_stay_in_their_ranges() -> None:
    n, translate, scale, squeeze, shear = 256, 2.0, 0.1, 0.1, 0.2
    x = _square(side=6).expand(n, 1, 28, 28).contiguous()
    torch.manual_seed(0)
    out = distort_batch(x, translate, scale, squeeze, shear)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert len({tuple(image.flatten().tolist()) for image in out}) == n  # no two alike
    offsets = _centroids(out)  # the square is centred: its centroid moves only by the shift
    assert offsets.abs().max() <= translate + 0.01
    assert (offsets.abs() > translate / 2).float().mean() > 0.3  # and the shifts spread out
    # Ink scales with the area, scale^2 * (1 - squeeze^2): from 0.9^2 * 0.99 to 1.1^2, within
    # the 2% that resampling a small square with bilinear weights may gain or lose.
    area = out.sum((1, 2, 3)) / x[0].sum()
    assert 0.9**2 * (1 - squeeze**2) * 0.98 <= float(area.min())
    assert float(area.max()) <= 1.1**2 * 1.02
    assert float(area.max() - area.min()) > 0.2  # the scales spread out too


def test_random_distortions_repeat_with_the_same_seed() -> None:
    x = torch.rand(8, 1, 28, 28)
    torch.manual_seed(7)
    first = distort_batch(x, 2.0, 0.1, 0.1, 0.2)
    again = distort_batch(x, 2.0, 0.1, 0.1, 0.2)  # the next draw: new distortions
    torch.manual_seed(7)
    torch.testing.assert_close(distort_batch(x, 2.0, 0.1, 0.1, 0.2), first, atol=0, rtol=0)
    assert not torch.equal(first, again)
    own = [distort_batch(x, 2.0, 0.1, 0.1, 0.2, torch.Generator().manual_seed(3)) for _ in "ab"]
    torch.testing.assert_close(own[0], own[1], atol=0, rtol=0)


def _datamodule(tiny_data: Path, augment) -> LeNetDataModule:
    dm = LeNetDataModule(
        root=str(tiny_data), val_size=200, batch_size=32, download=False, augment=augment
    )
    dm.trainer = pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("augment", ["affine", "shift_rotate", True])
def test_only_training_batches_are_distorted(tiny_data: Path, augment) -> None:
    dm = _datamodule(tiny_data, augment)
    batch = next(iter(dm.val_dataloader()))
    plain = batch[0].float() / 255
    for stage in ("validating", "testing", "predicting", "sanity_checking"):
        setattr(dm.trainer, stage, True)
        torch.testing.assert_close(dm.on_after_batch_transfer(batch, 0)[0], plain)
    dm.trainer.training = True
    distorted = dm.on_after_batch_transfer(batch, 0)[0]
    assert distorted.shape == plain.shape and not torch.allclose(distorted, plain, atol=1e-3)


@pytest.mark.parametrize(
    ("augment", "expected"),
    [(True, "shift_rotate"), (False, "none"), ("affine", "affine"), ("none", "none")],
)
def test_true_and_false_still_mean_shift_rotate_and_none(augment, expected: str) -> None:
    assert augmentation(augment) == expected
    cfg = compose_checked("train", [f"data.augment={str(augment).lower()}"])
    validate(cfg)
    assert augmentation(cfg.data.augment) == expected


def test_true_draws_the_shifts_and_rotations_of_before(tiny_data: Path) -> None:
    dm = _datamodule(tiny_data, True)
    dm.trainer.training = True
    batch = next(iter(dm.train_dataloader()))
    torch.manual_seed(5)
    got = dm.on_after_batch_transfer(batch, 0)[0]
    torch.manual_seed(5)
    torch.testing.assert_close(got, augment_batch(batch[0].float() / 255, 2.0, 10.0))


@pytest.mark.parametrize(
    "override", ["data.augment=sideways", "data.augment=1", "data.affine.scale=1.5"]
)
def test_a_bad_augmentation_is_refused_with_the_choices(override: str) -> None:
    cfg = compose_checked("train", [override])
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    key = override.split("=")[0]
    assert key in caught.value.message
    if key == "data.augment":
        assert all(name in caught.value.message for name in AUGMENTATIONS)


def test_an_unknown_augmentation_on_the_command_line_gives_a_panel(tmp_path: Path) -> None:
    result = run_cli("data.augment=sideways", cwd=tmp_path)
    text = " ".join(result.stderr.replace("│", " ").split())
    assert result.returncode == 2, text[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    for shown in ("data.augment", "'sideways'", "none", "shift_rotate", "affine"):
        assert shown in text, shown
    assert any(line.startswith("╭") for line in result.stderr.splitlines())  # a rich panel
    assert not run_folders(tmp_path)


def test_lenet_train_runs_with_the_papers_distortions(
    tmp_path: Path, tiny_data: Path, capsys: pytest.CaptureFixture
) -> None:
    from lenet_cli.cli.train import train

    out = tmp_path / "run"
    overrides = [f"data.root={tiny_data}", *TINY, "callbacks=none", "data.augment=affine"]
    cfg = compose_train([*overrides, "data.affine.shear=0.3"], out)
    train(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0.0 <= metrics["test/acc"] <= 1.0
    card = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "affine distortions" in card and "shear ±0.3" in card and "shift 2 px" in card


def test_hparams_offer_the_three_augmentations(tmp_path: Path) -> None:
    from tensorboard.plugins.hparams import metadata

    from lenet_cli.training.results import experiment_summary, hparams_for_tensorboard

    old = hparams_for_tensorboard(compose_train(["data.augment=true"], tmp_path))
    new = hparams_for_tensorboard(compose_train(["data.augment=affine"], tmp_path))
    assert (old["data/augment"], new["data/augment"]) == ("shift_rotate", "affine")
    content = experiment_summary([old, new]).value[0].metadata.plugin_data.content
    experiment = metadata.parse_experiment_plugin_data(content)  # as TensorBoard reads it back
    (info,) = [i for i in experiment.hparam_infos if i.name == "data/augment"]
    assert sorted(v.string_value for v in info.domain_discrete.values) == sorted(AUGMENTATIONS)
    assert info.differs


@pytest.mark.gpu
@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU")
def test_distortions_run_on_the_gpu_as_on_the_cpu() -> None:
    x = _square(side=8).expand(16, 1, 28, 28).contiguous()
    on_gpu = x.cuda()
    torch.manual_seed(0)
    out = distort_batch(on_gpu, 2.0, 0.1, 0.1, 0.2)
    assert out.device.type == "cuda" and out.shape == x.shape
    assert len({tuple(image.flatten().tolist()) for image in out.cpu()}) == 16
    torch.manual_seed(0)
    torch.testing.assert_close(distort_batch(on_gpu, 2.0, 0.1, 0.1, 0.2), out, atol=0, rtol=0)
    # The same matrices give the same pictures on both devices.
    theta = distortion_matrices(
        torch.tensor([[1.5, -1.0]]), torch.tensor([1.1]), torch.tensor([0.1]),
        torch.tensor([0.2]), height=28, width=28,
    ).expand(16, 2, 3)  # fmt: skip
    torch.testing.assert_close(resample(on_gpu, theta.cuda()).cpu(), resample(x, theta))
