"""lenet-export: ONNX and TorchScript files that take raw [0, 1] pixels and match PyTorch."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REAL_DATA, run_cli
from trained_runs import metrics, real_run, tiny_run

from lenet_cli.checkpoint_io import load_checkpoint
from lenet_cli.cli.export import main as export_main
from lenet_cli.training.mnist_files import ensure_files, load_split


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_data: Path) -> Path:
    return tiny_run(tmp_path_factory.getbasetemp(), tiny_data)


def raw_test_set(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The test split as the exported model takes it: float pixels in [0, 1], (N, 1, 28, 28)."""
    images, labels = load_split(ensure_files(root, "MNIST", download=False), "test", 10)
    return images.float().div(255).numpy(), labels.numpy()


def onnx_accuracy(path: Path, pixels: np.ndarray, labels: np.ndarray) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: pixels})[0]
    return float((logits.argmax(1) == labels).mean())


def test_onnx_export_runs_in_onnxruntime_on_raw_pixels(
    tmp_path: Path, tiny_data: Path, tiny: Path
) -> None:
    import onnx

    best = tiny / "checkpoints" / "best.ckpt"
    output = tmp_path / "models" / "m.onnx"
    result = run_cli(str(best), "--format", "onnx", "--output", str(output), cwd=tmp_path,
                     command="lenet-export")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lenet-export: done" in result.stdout and "max abs difference" in result.stdout
    pixels, labels = raw_test_set(tiny_data)
    accuracy = onnx_accuracy(output, pixels, labels)
    with torch.no_grad():
        logits = load_checkpoint(best).network(torch.from_numpy(pixels))
    assert accuracy == float((logits.argmax(1).numpy() == labels).mean())
    assert abs(accuracy - metrics(tiny)["test/acc"]) <= 0.001  # what lenet-eval reproduces
    assert onnx_accuracy(output, pixels[:1], labels[:1]) in (0.0, 1.0)  # any batch size
    properties = {p.key: p.value for p in onnx.load(str(output)).metadata_props}
    assert "[0, 1]" in properties["input"] and "LeNet" in properties["lenet_cli.model"]
    assert [p.name for p in output.parent.iterdir()] == ["m.onnx"]  # no temporary left behind
    umask = os.umask(0o022)
    os.umask(umask)
    assert output.stat().st_mode & 0o777 == 0o666 & ~umask  # not a temporary file's 0600


def test_torchscript_export_matches_pytorch(
    tmp_path: Path, tiny_data: Path, tiny: Path, capsys
) -> None:
    best = tiny / "checkpoints" / "best.ckpt"
    export_main([str(best), "--format", "torchscript", "--output", str(tmp_path / "m.pt")])
    assert "lenet-export: done" in capsys.readouterr().out
    pixels, _ = raw_test_set(tiny_data)
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(tmp_path / "m.pt"))
    with torch.no_grad():
        expected = load_checkpoint(best).network(torch.from_numpy(pixels))
        got = scripted(torch.from_numpy(pixels))
    assert torch.allclose(got, expected, atol=1e-5)


def test_an_export_that_computes_something_else_is_refused(
    tmp_path: Path, tiny: Path, capsys, monkeypatch
) -> None:
    from lenet_cli import exporters as export

    write, load = export.EXPORTERS["torchscript"]
    shifted = lambda path: lambda x: load(path)(x) + 0.01  # noqa: E731  a subtly wrong runtime
    monkeypatch.setitem(export.EXPORTERS, "torchscript", (write, shifted))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        export_main(
            [str(tiny / "checkpoints" / "best.ckpt"), "--format", "torchscript", "--output", "m.pt"]
        )
    assert exit_.value.code == 1
    assert "differs from PyTorch" in " ".join(capsys.readouterr().err.split())
    assert not list(tmp_path.iterdir())  # neither the file nor its temporary


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["missing.ckpt", "--format", "onnx", "--output", "m.onnx"], "missing.ckpt: no such file"),
        (["BEST", "--format", "onnx", "--output", "."], "is a folder"),
    ],
    ids=["missing-checkpoint", "output-is-a-folder"],
)
def test_bad_arguments_give_a_short_error(
    tmp_path: Path, tiny: Path, capsys, monkeypatch, args, expected
) -> None:
    monkeypatch.chdir(tmp_path)
    args = [str(tiny / "checkpoints" / "best.ckpt") if a == "BEST" else a for a in args]
    with pytest.raises(SystemExit) as exit_:
        export_main(args)
    assert exit_.value.code == 1
    assert expected in " ".join(capsys.readouterr().err.split())


@pytest.mark.skipif(not REAL_DATA, reason="set LENET_DATA_DIR to the real MNIST")
def test_real_mnist_onnx_accuracy_equals_the_evaluated_one(
    tmp_path_factory, tmp_path: Path
) -> None:
    run = real_run(tmp_path_factory.getbasetemp())
    output = tmp_path / "m.onnx"
    export_main(
        [str(run / "checkpoints" / "best.ckpt"), "--format", "onnx", "--output", str(output)]
    )
    pixels, labels = raw_test_set(Path(str(REAL_DATA)))
    assert abs(onnx_accuracy(output, pixels, labels) - metrics(run)["test/acc"]) <= 0.001
