"""TensorBoard pictures of a run (filters, feature maps, mistakes, confusion, translation probe)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, compose_train
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from trained_runs import tiny_output, tiny_run

from lenet_cli.evaluation.probe import probe_counts, shift

PICTURES = {
    "filters/C1",
    "filters/C3_summed_over_inputs",
    "feature_maps/1_C1",
    "feature_maps/2_S2",
    "feature_maps/3_C3",
    "feature_maps/4_S4",
    "mistakes/test",
    "confusion_matrix",
    "probe/translation",
}
PROBE = {f"probe/shift_acc_{s}px" for s in range(5)}
CLASSES = {f"test/acc_class_{k}" for k in range(10)}


def events_of(run: Path) -> EventAccumulator:
    events = EventAccumulator(
        str(run / "tensorboard"), size_guidance={"images": 0, "histograms": 0}
    )
    events.Reload()
    return events


def image(events: EventAccumulator, tag: str) -> Image.Image:
    return Image.open(io.BytesIO(events.Images(tag)[-1].encoded_image_string))


@pytest.fixture(scope="module")
def classic_run(tmp_path_factory, tiny_data: Path) -> tuple[Path, str]:
    """One real one-epoch lenet-train run of the faithful LeNet-5 on the tiny data."""
    root = tmp_path_factory.getbasetemp()
    return tiny_run(root, tiny_data), tiny_output(root, tiny_data)[0]


def test_one_epoch_leaves_every_picture_in_tensorboard(classic_run) -> None:
    run, _ = classic_run
    events = events_of(run)
    tags = events.Tags()
    assert PICTURES <= set(tags["images"])
    grad_norms = {"grad_norm/total", "grad_norm/features.C1.0.weight"}  # Lightning's grad_norm
    assert PROBE | CLASSES | grad_norms | {"test/acc"} <= set(tags["scalars"])
    assert {"weights/features.C1.0.weight", "weights/classifier.output.weight"} <= set(
        tags["histograms"]
    )
    assert tags["graph"]
    # Filters and feature maps are drawn before training and after each epoch: steps 0 and 20.
    assert [e.step for e in events.Images("filters/C1")] == [0, 20]
    # feature maps of C1: 8 digits (rows) x (the digit + 6 maps) of 28x28 enlarged to 56 px.
    assert image(events, "feature_maps/1_C1").size == (7 * 56 + 6 * 2, 8 * 56 + 7 * 2)
    assert (
        image(events, "filters/C3_summed_over_inputs").size[0] > image(events, "filters/C1").size[0]
    )


def test_probe_and_class_accuracies_reach_metrics_json_and_the_summary(classic_run) -> None:
    run, stdout = classic_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert PROBE | CLASSES <= metrics.keys()
    # The synthetic classes are bars 2 rows apart: moving a digit 2+ pixels turns it into
    # another class, so accuracy must fall with the shift.
    assert metrics["probe/shift_acc_0px"] > 0.5
    assert (
        metrics["probe/shift_acc_0px"]
        > metrics["probe/shift_acc_2px"]
        > metrics["probe/shift_acc_4px"]
    )
    mean_class = np.mean([metrics[k] for k in CLASSES])
    assert abs(mean_class - metrics["test/acc"]) < 0.1  # per-class values agree with the total
    assert "shifted test digits" in stdout and "% at 0-4 px" in stdout


def test_images_false_turns_the_pictures_off(tmp_path: Path, tiny_data: Path, capsys) -> None:
    from lenet_cli.cli.train import train

    run = tmp_path / "run"
    train(
        compose_train([f"data.root={tiny_data}", "model=modern", *TINY, "logger.images=false"], run)
    )
    shown = capsys.readouterr().out
    tags = events_of(run).Tags()
    assert tags["images"] == [] and tags["histograms"] == [] and not tags["graph"]
    assert not PROBE & set(tags["scalars"]) and not any("grad_norm" in t for t in tags["scalars"])
    # The logger itself still works; the per-class scores are the module's test metrics now.
    assert {"test/acc"} | CLASSES <= set(tags["scalars"])
    assert not PROBE & json.loads((run / "metrics.json").read_text()).keys()
    assert "lenet-train: done" in shown and "shifted test digits" not in shown


def test_images_must_be_a_boolean() -> None:
    from lenet_cli.config import compose_checked, validate
    from lenet_cli.errors import ConfigError

    validate(compose_checked("train", ["logger.images=false"]))
    with pytest.raises(ConfigError, match="logger.images is 'sometimes'") as error:
        validate(compose_checked("train", ["logger.images=sometimes"]))
    assert error.value.exit_code == 2


def test_shift_moves_pixels_and_fills_with_background() -> None:
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0
    assert shift(x, 1, 0)[0, 0, 2, 3] == 1.0 and shift(x, 1, 0).sum() == 1
    assert shift(x, -2, -2)[0, 0, 0, 0] == 1.0
    assert shift(x, 3, 0).sum() == 0  # moved out of the image: nothing wraps around
    assert shift(x, 0, 9).sum() == 0


def test_probe_tells_a_shift_invariant_model_from_a_pixel_reader() -> None:
    # Class 1 when the 3x3 centre has ink. A max over the whole image ignores where the ink
    # is; reading the centre pixel fails as soon as the dot moves away from it.
    images = torch.zeros(20, 1, 9, 9)
    images[:10, 0, 3:6, 3:6] = 1.0
    labels = torch.tensor([1] * 10 + [0] * 10)

    def invariant(x: torch.Tensor) -> torch.Tensor:
        ink = x.amax(dim=(1, 2, 3))
        return torch.stack([1 - ink, ink], 1)

    def centre_pixel(x: torch.Tensor) -> torch.Tensor:
        ink = x[:, 0, 4, 4]
        return torch.stack([1 - ink, ink], 1)

    def accuracy(model) -> list[float]:  # at each shift, 8 directions averaged
        correct, total = probe_counts(model, images, labels, max_shift=2)
        return (correct / total).tolist()

    assert accuracy(invariant) == [1.0, 1.0, 1.0]
    assert accuracy(centre_pixel) == [1.0, 1.0, 0.5]
