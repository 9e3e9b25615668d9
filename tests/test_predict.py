"""lenet-predict and MNIST preprocessing: photos in, digits out, bad files and checkpoints out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REAL_DATA, run_cli
from PIL import Image
from trained_runs import real_run, tiny_run

from lenet_cli.checkpoint_io import load_checkpoint
from lenet_cli.cli.predict import main as predict_main
from lenet_cli.errors import CheckpointError
from lenet_cli.models import build_network
from lenet_cli.preprocess import ImageError, load_greyscale, to_mnist
from lenet_cli.training.datamodule import LeNetDataModule
from lenet_cli.training.mnist_files import ensure_files, load_split
from lenet_cli.training.module import LeNetModule
from lenet_cli.training.trainer import build_trainer


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tiny_data: Path) -> Path:
    return tiny_run(tmp_path_factory.getbasetemp(), tiny_data) / "checkpoints" / "best.ckpt"


def render_photo(digit: np.ndarray, path: Path, rng: np.random.Generator) -> None:
    """A 28x28 test digit printed as the issue describes: dark ink on light grey paper, 5x larger,
    off-centre on a 400x300 page, with paper grain; PNG or JPEG by the file's suffix."""
    big = Image.fromarray(digit).resize((140, 140), Image.Resampling.BICUBIC)
    ink = np.asarray(big, dtype=np.float32) / 255
    page = np.full((300, 400), 0.8, dtype=np.float32)
    top, left = rng.integers(5, 300 - 145), rng.integers(5, 400 - 145)
    page[top : top + 140, left : left + 140] = 0.8 * (1 - ink) + 0.1 * ink
    page += rng.normal(0, 0.02, page.shape).astype(np.float32)
    Image.fromarray(np.clip(page * 255, 0, 255).astype(np.uint8)).save(path)


def write_photos(folder: Path, images: np.ndarray) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = [folder / f"photo{i}.{'png' if i % 2 else 'jpg'}" for i in range(len(images))]
    for image, path in zip(images, paths, strict=True):
        render_photo(image, path, rng)
    return paths


def ring(size: int = 60, thickness: int = 8) -> np.ndarray:
    """A bright '0' (an ellipse ring) on black, taller than wide."""
    y, x = np.mgrid[:size, :size]
    r = ((y - size / 2) / (size / 2 - 1)) ** 2 + ((x - size / 2) / (size / 3)) ** 2
    inner = 1 - 2 * thickness / size
    return ((r <= 1) & (r >= inner**2)).astype(np.float32)


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(image.shape)
    return float((rows * image).sum() / image.sum()), float((cols * image).sum() / image.sum())


def ink_box(image: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(image > 0)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


# -- preprocessing -------------------------------------------------------------------------------


def test_dark_ink_on_light_paper_is_inverted_to_mnist_polarity() -> None:
    light_on_dark = np.zeros((120, 120), dtype=np.float32)
    light_on_dark[30:90, 30:90] = ring()
    from_dark_paper = to_mnist(light_on_dark)
    from_light_paper = to_mnist(1.0 - light_on_dark)
    assert np.abs(from_dark_paper - from_light_paper).max() < 1e-5
    assert from_light_paper.max() == pytest.approx(1.0) and from_light_paper[0].max() == 0.0
    assert (from_light_paper > 0.5).mean() < 0.4  # ink bright on black, not the other way round


def test_a_digit_in_a_corner_is_fitted_to_20_pixels_and_centred_by_mass() -> None:
    page = np.ones((200, 260), dtype=np.float32)  # white paper
    page[4:64, 6:66] = 1.0 - ring()  # dark '0' in the top-left corner
    field = to_mnist(page)
    assert field.shape == (28, 28)
    assert max(ink_box(field)) == 20
    row, col = centre_of_mass(field)
    assert abs(row - 14) <= 0.5 and abs(col - 14) <= 0.5


def test_aspect_ratio_is_kept() -> None:
    page = np.zeros((100, 100), dtype=np.float32)
    page[10:90, 40:52] = 1.0  # a '1': 80 tall, 12 wide
    height, width = ink_box(to_mnist(page))
    assert height == 20 and width == 3


def test_grey_grainy_paper_becomes_black_background() -> None:
    rng = np.random.default_rng(1)
    page = np.full((240, 320), 0.7, dtype=np.float32) + rng.normal(0, 0.03, (240, 320))
    page[100:160, 200:260] -= 0.6 * ring()
    field = to_mnist(np.clip(page, 0, 1).astype(np.float32))
    assert max(ink_box(field)) == 20  # the grain did not stretch the ink's bounding box
    outside = np.ones((28, 28), dtype=bool)
    outside[4:24, 4:24] = False
    assert field[outside].max() < 0.1


def test_blank_image_is_refused() -> None:
    with pytest.raises(ImageError, match="no digit found"):
        to_mnist(np.full((50, 50), 0.8, dtype=np.float32))


def test_transparent_background_counts_as_white_paper(tmp_path: Path) -> None:
    rgba = np.zeros((80, 80, 4), dtype=np.uint8)  # fully transparent (and black) everywhere
    rgba[10:70, 10:70, 3] = (255 * ring()).astype(np.uint8)  # opaque black ink
    Image.fromarray(rgba).save(tmp_path / "drawn.png")
    grey = load_greyscale(tmp_path / "drawn.png")
    assert grey[0, 0] == 1.0 and grey.min() == 0.0  # white paper, black ink
    assert max(ink_box(to_mnist(grey))) == 20


# -- lenet-predict -------------------------------------------------------------------------------


def test_photos_are_read_and_predicted_as_json(
    tmp_path: Path, tiny_data: Path, tiny_ckpt: Path
) -> None:
    images, _ = load_split(ensure_files(tiny_data, "MNIST", download=False), "test", 10)
    photos = write_photos(tmp_path / "photos", images[:10, 0].numpy())
    seen = tmp_path / "seen"
    result = run_cli(str(tiny_ckpt), *map(str, photos), "--json", "--save-preprocessed", str(seen),
                     cwd=tmp_path, command="lenet-predict")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout)
    assert [a["path"] for a in answers] == [str(p) for p in photos]
    for answer in answers:
        assert set(answer) == {"path", "label", "confidence", "probabilities"}
        assert len(answer["probabilities"]) == 10
        assert sum(answer["probabilities"]) == pytest.approx(1, abs=1e-4)
        assert answer["label"] == int(np.argmax(answer["probabilities"]))
        assert answer["confidence"] == max(answer["probabilities"])
    # What the network saw: each synthetic digit's bar, 20 pixels wide, centred by its mass.
    saved = sorted(seen.iterdir())
    assert len(saved) == 10
    for path in saved:
        field = np.asarray(Image.open(path), dtype=np.float32) / 255
        assert field.shape == (28, 28) and ink_box(field)[1] == 20
        row, col = centre_of_mass(field)
        assert abs(row - 14) <= 1 and abs(col - 14) <= 1


def test_unreadable_files_in_a_folder_are_skipped_and_reported(
    tmp_path: Path, tiny_data: Path, tiny_ckpt: Path, capsys, monkeypatch
) -> None:
    images, _ = load_split(ensure_files(tiny_data, "MNIST", download=False), "test", 10)
    folder = tmp_path / "mixed"
    write_photos(folder, images[:2, 0].numpy())
    (folder / "notes.txt").write_text("not a picture")
    (folder / "broken.png").write_bytes((folder / "photo1.png").read_bytes()[:200])
    monkeypatch.chdir(tmp_path)
    predict_main([str(tiny_ckpt), "mixed", "--top-k", "2"])
    out, err = capsys.readouterr()
    assert "mixed/photo0.jpg" in out and "mixed/photo1.png" in out and "top 2" in out
    assert "notes.txt" not in out and "broken.png" not in out
    err = " ".join(err.split())
    assert "skipped" in err and "notes.txt: not an image" in err and "broken.png" in err


def test_nothing_readable_is_an_error(tmp_path: Path, tiny_ckpt: Path, capsys) -> None:
    (tmp_path / "notes.txt").write_text("not a picture")
    with pytest.raises(SystemExit) as exit_:
        predict_main([str(tiny_ckpt), str(tmp_path)])
    assert exit_.value.code == 1
    assert "No image could be read" in capsys.readouterr().err


# -- checkpoints -------------------------------------------------------------------------------


class Payload:
    """Unpickling this runs open(marker, "w"): what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def hostile(tmp_path: Path, tiny_ckpt: Path) -> tuple[Path, Path]:
    """A checkpoint whose unpickling runs the payload, and the marker file the payload makes."""
    marker = tmp_path / "payload-ran"
    hostile = tmp_path / "hostile.ckpt"
    contents = torch.load(tiny_ckpt, weights_only=True)
    contents["callbacks"] = Payload(marker)
    torch.save(contents, hostile)
    torch.load(hostile, weights_only=False)  # the test is real: a plain load runs the payload
    assert marker.exists()
    marker.unlink()
    return hostile, marker


def test_a_hostile_checkpoint_cannot_run_code(tmp_path: Path, hostile: tuple[Path, Path]) -> None:
    checkpoint, marker = hostile
    photo = write_photos(tmp_path / "photos", np.full((1, 28, 28), 255, np.uint8))[0]
    result = run_cli(str(checkpoint), str(photo), cwd=tmp_path, command="lenet-predict")
    assert result.returncode == 1 and not marker.exists()
    text = " ".join(result.stderr.split())
    assert "hostile.ckpt" in text and "weights-only" in text and "Traceback" not in text


def test_lightning_reads_checkpoints_weights_only_even_when_asked_otherwise(
    hostile: tuple[Path, Path], tiny_ckpt: Path, tiny_data: Path
) -> None:
    # trainer.fit/test(ckpt_path=...) load through the trainer's CheckpointIO; on torch 2.4-2.5
    # torch.load's default is weights_only=False, and Lightning passes on whatever it is given.
    checkpoint, marker = hostile
    hp = torch.load(tiny_ckpt, weights_only=True)["hyper_parameters"]
    module = LeNetModule(hp["model"], hp["optimizer"], hp["scheduler"])
    settings = {"_target_": "pytorch_lightning.Trainer", "accelerator": "cpu", "devices": 1}
    trainer = build_trainer({**settings, "logger": False, "enable_progress_bar": False}, [], [])
    data = LeNetDataModule(root=str(tiny_data), val_size=200, eval_batch_size=200)
    with pytest.raises(CheckpointError, match="weights-only"):
        trainer.test(module, datamodule=data, ckpt_path=str(checkpoint), weights_only=False)
    assert not marker.exists()


def test_a_model_config_naming_another_class_is_refused(tmp_path: Path, tiny_ckpt: Path) -> None:
    marker = tmp_path / "payload-ran"
    contents = torch.load(tiny_ckpt, weights_only=True)
    # A class whose constructor has an effect: here it creates a file; it could run a command.
    contents["hyper_parameters"]["model"] = {
        "_target_": "logging.FileHandler",
        "filename": str(marker),
    }
    build_network(contents["hyper_parameters"]["model"]).close()  # unchecked, it runs
    assert marker.exists()
    marker.unlink()
    torch.save(contents, tmp_path / "injected.ckpt")
    with pytest.raises(CheckpointError, match="not a lenet-cli network"):
        load_checkpoint(tmp_path / "injected.ckpt")
    assert not marker.exists()


def bad_checkpoint(kind: str, folder: Path, good: Path) -> Path:
    """A checkpoint file that must be refused: missing, not one, another program's, edited."""
    path = folder / f"{kind}.ckpt"
    if kind == "not-a-checkpoint":
        path.write_text("hello")
    elif kind == "other-program":
        torch.save({"weight": torch.ones(2)}, path)
    elif kind == "other-architecture":
        contents = torch.load(good, weights_only=True)
        contents["hyper_parameters"]["model"].update(c3_table="full", channels=[6, 12])
        torch.save(contents, path)
    return path


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing", "missing.ckpt: no such file"),
        ("not-a-checkpoint", "is not a PyTorch checkpoint"),
        ("other-program", "not a lenet-cli checkpoint"),
        ("other-architecture", "another architecture"),
    ],
)
def test_bad_checkpoints_give_a_short_error_naming_the_file(
    tmp_path: Path, tiny_ckpt: Path, capsys, monkeypatch, kind: str, expected: str
) -> None:
    checkpoint = bad_checkpoint(kind, tmp_path, tiny_ckpt)
    write_photos(tmp_path / "photos", np.full((1, 28, 28), 255, np.uint8))
    monkeypatch.chdir(tmp_path)  # short relative names: the panel does not wrap them
    with pytest.raises(SystemExit) as exit_:
        predict_main([checkpoint.name, "photos"])
    assert exit_.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "Checkpoint error" in err and checkpoint.name in err and expected in err


@pytest.mark.skipif(not REAL_DATA, reason="set LENET_DATA_DIR to the real MNIST")
def test_real_mnist_photos_are_read_right(tmp_path_factory, tmp_path: Path) -> None:
    best = real_run(tmp_path_factory.getbasetemp()) / "checkpoints" / "best.ckpt"
    images, labels = load_split(ensure_files(str(REAL_DATA), "MNIST", download=False), "test", 10)
    photos = write_photos(tmp_path / "photos", images[:10, 0].numpy())
    result = run_cli(str(best), *map(str, photos), "--json", cwd=tmp_path, command="lenet-predict")
    assert result.returncode == 0, result.stderr[-3000:]
    said = [answer["label"] for answer in json.loads(result.stdout)]
    right = sum(int(s == t) for s, t in zip(said, labels[:10].tolist(), strict=True))
    assert right >= 9, f"{right}/10 right: said {said}, truth {labels[:10].tolist()}"
