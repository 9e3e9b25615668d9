"""Every bad input ends early with a short panel naming the key or file, the right exit code, and
no traceback; nothing a run already wrote is lost."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_train, run_cli, run_folders, write_mnist


def assert_clean_error(result, code: int, *expected: str) -> str:
    text = " ".join((result.stderr + result.stdout).replace("│", " ").split())
    assert result.returncode == code, text[-2000:]
    assert "Traceback" not in text
    for piece in expected:
        assert piece in text, f"{piece!r} not in: {text[-1500:]}"
    # A short panel: the whole error fits in about 15 lines.
    panel = [line for line in result.stderr.splitlines() if line.startswith(("│", "╭", "╰"))]
    assert 3 <= len(panel) <= 18, result.stderr
    return text


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model=nonexistent", ["model=nonexistent", "classic", "modern", "mlp"]),
        ("model.kernal_size=5", ["model.kernal_size", "Did you mean model.kernel_size"]),
        ("model.kernel_size=abc", ["model.kernel_size", "positive integer"]),
        ("model.kernel_size=0", ["model.kernel_size", "positive integer"]),
        ("data.batch_size=0", ["data.batch_size", "positive integer"]),
        ("optimizer.lr=-1", ["optimizer.lr", "positive number"]),
        ("trainer.max_epochs=-5", ["trainer.max_epochs", "positive integer"]),
        ("model.activation=swish", ["model.activation", "scaled_tanh"]),
        ("model.pooling=median", ["model.pooling", "trainable"]),
    ],
)
def test_configuration_errors(override: str, expected: list[str], tmp_path: Path) -> None:
    result = run_cli(override, cwd=tmp_path)
    assert_clean_error(result, 2, *expected)
    assert not run_folders(tmp_path)  # refused before any folder was made


def test_impossible_geometry_shows_the_shape_trace(tmp_path: Path) -> None:
    result = run_cli("model=modern", "model.kernel_size=15", "model.padding=0", cwd=tmp_path)
    assert_clean_error(result, 2, "smaller than 1x1", "C1", "S2", "->", "kernel_size")
    assert not run_folders(tmp_path)


def test_more_devices_than_the_machine_has(tmp_path: Path) -> None:
    result = run_cli("trainer.accelerator=cpu", "trainer.devices=64", cwd=tmp_path)
    assert_clean_error(result, 2, "trainer.devices=64", "this machine has")


def test_corrupt_mnist_file_is_named(tmp_path: Path) -> None:
    data = write_mnist(tmp_path / "data", 300, 100)
    images = data / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])  # truncated download
    result = run_cli(*TINY, cwd=tmp_path, data=data)
    assert_clean_error(result, 1, "train-images-idx3-ubyte", "truncated or corrupt")


def test_ckpt_path_missing(tmp_path: Path, tiny_data: Path) -> None:
    result = run_cli(*TINY, "ckpt_path=nowhere/last.ckpt", cwd=tmp_path, data=tiny_data)
    assert_clean_error(result, 1, "nowhere/last.ckpt", "no such file")
    assert not run_folders(tmp_path)


def test_ckpt_path_not_a_checkpoint(tmp_path: Path, tiny_data: Path) -> None:
    bogus = tmp_path / "notes.ckpt"
    bogus.write_text("these are my notes, not weights")
    result = run_cli(*TINY, f"ckpt_path={bogus}", cwd=tmp_path, data=tiny_data)
    assert_clean_error(result, 1, "notes.ckpt", "not a PyTorch checkpoint")


def test_ckpt_path_of_another_architecture(tmp_path: Path, tiny_data: Path) -> None:
    from lenet_cli.cli.train import train

    run = tmp_path / "first"
    train(compose_train([f"data.root={tiny_data}", "model=mlp", *TINY, "callbacks=none"], run))
    last = run / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    result = run_cli("model=classic", *TINY, f"ckpt_path={last}", cwd=tmp_path, data=tiny_data)
    assert_clean_error(result, 1, "does not fit", "resume=")
    assert last.read_bytes() == before and not run_folders(tmp_path)  # nothing lost or added


def test_output_folder_that_cannot_be_written(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if (locked / "probe").mkdir() is None:  # root ignores permissions: nothing to test then
            pytest.skip("running as a user who can write anywhere")
    except PermissionError:
        pass
    result = run_cli(f"paths.output_root={locked}/outputs", cwd=tmp_path)
    assert_clean_error(result, 2, str(locked), "paths.output_root")


def test_output_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "outputs").write_text("not a folder")
    result = run_cli(cwd=tmp_path)
    assert_clean_error(result, 2, "outputs", "paths.output_root")


def test_full_error_env_shows_the_traceback(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("needs a machine without a GPU")
    result = run_cli("model=nonexistent", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode == 2
    assert "Traceback" in result.stderr
