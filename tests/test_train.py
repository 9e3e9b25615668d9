"""lenet-train end to end: run folder, metrics.json, TensorBoard contents, resume, repeatability."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import REAL_DATA, TINY, compose_train, run_cli, run_folders
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from trained_runs import real_run

from lenet_cli.cli.train import train

METRIC_KEYS = {
    "train/loss",
    "train/acc",
    "val/loss",
    "val/acc",
    "val/acc_best",
    "test/loss",
    "test/acc",
    "fit_seconds",
    "epochs",
    "train_samples_per_second",
}


def fit_in_process(tmp_path: Path, tiny_data: Path, *overrides: str) -> dict:
    out = tmp_path / "run"
    cfg = compose_train([f"data.root={tiny_data}", *TINY, "callbacks=none", *overrides], out)
    train(cfg)
    return json.loads((out / "metrics.json").read_text())


def test_cli_run_leaves_one_complete_run_folder(tmp_path: Path, tiny_data: Path) -> None:
    # The pictures (test_pictures.py) cost seconds and are not what this test checks.
    args = ["model=classic", *TINY, "trainer.max_epochs=2", "logger.images=false"]
    result = run_cli(*args, cwd=tmp_path, data=tiny_data)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_folders(tmp_path)
    assert (run / ".hydra" / "config.yaml").exists() and (run / "train.log").exists()
    assert (run / "config_tree.txt").read_text().startswith("config")
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert METRIC_KEYS <= metrics.keys()
    assert metrics["epochs"] == 2 and metrics["test/acc"] > 0.5  # the synthetic bars are learnable
    assert not list((run / "tensorboard").glob("version_*"))
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss_step", "val/acc", "val/acc_best", "test/acc"} <= scalars
    assert "hparams" in events.PluginTagToContent("hparams") or events.PluginTagToContent("hparams")
    assert "lenet-train: done" in result.stdout and "tensorboard --logdir" in result.stdout
    assert "Traceback" not in result.stderr


def test_two_runs_in_the_same_second_get_their_own_folders(tmp_path: Path) -> None:
    from lenet_cli.cli.app import claim_folder

    first, second = claim_folder(tmp_path, "12-00-00"), claim_folder(tmp_path, "12-00-00")
    assert first != second and first.is_dir() and second.is_dir()


def test_metrics_json_is_flat_and_complete(tmp_path: Path, tiny_data: Path) -> None:
    metrics = fit_in_process(tmp_path, tiny_data, "model=modern", "optimizer=sgd", "scheduler=step")
    assert METRIC_KEYS <= metrics.keys()
    assert all(isinstance(v, (int, float)) for v in metrics.values())


@pytest.mark.parametrize("scheduler", ["none", "cosine", "onecycle"])
def test_schedulers_run(tmp_path: Path, tiny_data: Path, scheduler: str) -> None:
    metrics = fit_in_process(
        tmp_path, tiny_data, "model=tutorial", f"scheduler={scheduler}", "optimizer=adamw"
    )
    assert metrics["epochs"] == 1


def test_deterministic_runs_repeat_exactly(tmp_path: Path, tiny_data: Path) -> None:
    a = fit_in_process(
        tmp_path / "a", tiny_data, "trainer.deterministic=true", "seed=0", "data.augment=true"
    )
    b = fit_in_process(
        tmp_path / "b", tiny_data, "trainer.deterministic=true", "seed=0", "data.augment=true"
    )
    for key in ("train/loss", "val/loss", "test/loss", "test/acc"):
        assert a[key] == b[key]


def test_seed_null_draws_a_seed_that_repeats_the_run(tmp_path: Path, tiny_data: Path) -> None:
    same = ("trainer.deterministic=true", "data.augment=true")
    a = fit_in_process(tmp_path / "a", tiny_data, "seed=null", *same)
    b = fit_in_process(tmp_path / "b", tiny_data, "seed=null", *same)
    assert isinstance(a["seed"], int) and isinstance(b["seed"], int) and a["seed"] != b["seed"]
    assert a["train/loss"] != b["train/loss"]  # weights, data order and augmentation differ
    again = fit_in_process(tmp_path / "c", tiny_data, f"seed={a['seed']}", *same)
    for key in ("train/loss", "val/loss", "test/loss", "test/acc"):
        assert again[key] == a[key]
    assert again["seed"] == a["seed"]


def test_a_schedule_too_short_to_run_is_refused(tmp_path: Path, tiny_data: Path) -> None:
    from lenet_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 3 optimiser steps, but this run makes 2"):
        fit_in_process(tmp_path, tiny_data, "trainer.limit_train_batches=2")
    # fast_dev_run (one step, to check the code runs) builds the schedule all the same.
    cfg = compose_train([f"data.root={tiny_data}", *TINY, "debug=fast_dev_run"], tmp_path / "f")
    train(cfg)


def test_resume_from_last_checkpoint_continues(tmp_path: Path, tiny_data: Path) -> None:
    fit_in_process(tmp_path / "first", tiny_data, "scheduler=step")
    last = tmp_path / "first" / "run" / "checkpoints" / "last.ckpt"
    assert last.exists()
    more = ("scheduler=step", f"ckpt_path={last}", "trainer.max_epochs=2")
    metrics = fit_in_process(tmp_path / "second", tiny_data, *more)
    assert metrics["epochs"] == 2


def test_resume_with_a_longer_onecycle_is_refused_clearly(tmp_path: Path, tiny_data: Path) -> None:
    from lenet_cli.errors import ConfigError

    fit_in_process(tmp_path / "first", tiny_data)
    last = tmp_path / "first" / "run" / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match="OneCycle"):
        fit_in_process(tmp_path / "second", tiny_data, f"ckpt_path={last}", "trainer.max_epochs=2")


def test_no_gpu_gives_a_short_error(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = run_cli("trainer.accelerator=gpu", cwd=tmp_path)
    assert result.returncode == 2
    assert "no CUDA GPU" in result.stderr and "trainer.accelerator=cpu" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not run_folders(tmp_path)  # refused before any folder was made


def test_no_data_gives_a_short_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("data.download=false", cwd=tmp_path, data=empty)
    assert result.returncode == 1
    text = " ".join(result.stderr.split())
    assert "MNIST files not found" in text and "train-images-idx3-ubyte" in text
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.skipif(not REAL_DATA, reason="set LENET_DATA_DIR to the real MNIST")
def test_real_mnist_short_fit(tmp_path_factory) -> None:
    # The session's short real run (trained_runs.py): 200 batches of the modern LeNet-5.
    run = real_run(tmp_path_factory.getbasetemp())
    assert json.loads((run / "metrics.json").read_text())["test/acc"] > 0.93


def test_bf16_mixed_precision_and_channels_last_on_cpu(tmp_path: Path, tiny_data: Path) -> None:
    # The same Lightning code path as trainer=gpu's bf16-mixed, through CPU autocast.
    metrics = fit_in_process(
        tmp_path, tiny_data, "trainer.precision=bf16-mixed", "model.channels_last=true"
    )
    assert metrics["test/acc"] > 0.3


class DeviceRecorder(pl.Callback):
    """Where the training data and the network live once training starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        images, labels = trainer.datamodule.splits["train"]
        self.devices = {images.device.type, labels.device.type, pl_module.device.type}


GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize(  # the CPU case runs the same plumbing where there is no GPU
    ("overrides", "device"),
    [
        (["trainer=cpu", "data.on_device=true"], "cpu"),
        pytest.param(["trainer=gpu", "model.compile=true"], "cuda", marks=[pytest.mark.gpu, GPU]),
    ],
)
def test_the_data_stays_on_the_training_device(
    tmp_path: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch, overrides, device
) -> None:
    import lenet_cli.training.trainer as trainer_module

    recorder, build = DeviceRecorder(), trainer_module.training_trainer
    monkeypatch.setattr(  # called as train() calls it (with progress_bar=)
        trainer_module, "training_trainer", lambda cfg, **kw: _with(build(cfg, **kw), recorder)
    )
    metrics = fit_in_process(tmp_path, tiny_data, *overrides)
    assert recorder.devices == {device}
    assert metrics["test/acc"] > 0.3


def _with(trainer, callback):
    trainer.callbacks.append(callback)
    return trainer


# Parameters of each named variant, as in the README's table (lenet-inspect --json).
VARIANTS = {
    "classic": 60_850,
    "modern": 61_706,
    "d2l": 61_706,
    "tutorial": 60_074,
    "lenet1": 2_578,
    "lenet4": 52_698,
    "mlp": 669_706,
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_named_variant_trains_and_its_checkpoint_rebuilds_it(
    tmp_path: Path, tiny_data: Path, variant: str
) -> None:
    from lenet_cli.checkpoint_io import load_checkpoint
    from lenet_cli.models import build_network

    metrics = fit_in_process(tmp_path, tiny_data, f"model={variant}", "model.dropout=0.1")
    assert metrics["epochs"] == 1 and metrics["train_samples_per_second"] > 0
    assert all(math.isfinite(metrics[k]) for k in ("train/loss", "val/loss", "test/loss"))
    stored = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert stored.name == variant
    assert sum(p.numel() for p in stored.network.parameters()) == VARIANTS[variant]
    # The weights moved away from the seeded initial ones (seed 42: the config's default).
    torch.manual_seed(42)
    initial = build_network(stored.model_cfg).state_dict()
    trained = stored.network.state_dict()
    assert any(not torch.equal(initial[k], trained[k]) for k in initial)
    if variant != "d2l":  # sigmoid units need more than these 20 steps to leave chance level
        assert metrics["val/acc_best"] > 0.15


def test_fast_recipe_builds_a_fused_channels_last_step(tmp_path: Path) -> None:
    from lenet_cli.config import plain_config
    from lenet_cli.training.module import LeNetModule

    cfg = compose_train(["experiment=fast"], tmp_path)
    assert cfg.trainer.check_val_every_n_epoch == cfg.trainer.max_epochs == 2  # one validation
    longer = compose_train(["experiment=fast", "trainer.max_epochs=3"], tmp_path)
    assert longer.trainer.check_val_every_n_epoch == 3  # still after the last epoch
    plain = plain_config(cfg)
    module = LeNetModule(plain["model"], plain["optimizer"], None)
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["fused"] is True
    conv_weights = [m.weight for m in module.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert conv_weights and all(
        w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights
    )
    # (with one input channel both layouts coincide; with six they cannot)
    assert not conv_weights[1].is_contiguous()
    # The default Adam is torch's own choice (for-loop on CPU, foreach on CUDA).
    plain = plain_config(compose_train([], tmp_path))
    default = LeNetModule(plain["model"], plain["optimizer"], None).configure_optimizers()
    assert default["optimizer"].defaults["fused"] is None


def test_fast_recipe_tests_the_checkpoint_of_its_last_epoch(
    tmp_path: Path, tiny_data: Path
) -> None:
    # Asked for 3 epochs, the recipe validates once, after the third, and tests that checkpoint
    # (1,000 training images, 100 a batch: 10 steps an epoch).
    out = tmp_path / "run"
    overrides = [
        "experiment=fast",
        "trainer.max_epochs=3",
        "data.val_size=200",
        "data.batch_size=100",
    ]
    train(compose_train([f"data.root={tiny_data}", *overrides], out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and "val/acc_best" in metrics
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/acc")] == [3 * 10 - 1]
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert best["epoch"] == 2


@pytest.mark.parametrize(
    ("capabilities", "accelerator", "expected"),
    [
        ([(7, 0)], "gpu", "16-mixed"),  # V100: bf16 only emulated
        ([(7, 5), (8, 0)], "auto", "16-mixed"),  # the oldest GPU decides
        ([(8, 0)], "gpu", "bf16-mixed"),  # A100
        ([(9, 0)], "cpu", "bf16-mixed"),  # a CPU run keeps CPU bf16 autocast
        ([(7, 0)], "cpu", "bf16-mixed"),
        (None, "gpu", "bf16-mixed"),  # NVML cannot answer: as configured
    ],
)
def test_bf16_falls_back_to_fp16_only_without_native_bf16(
    monkeypatch, capabilities, accelerator: str, expected: str
) -> None:
    from lenet_cli import devices

    def initialises_cuda(*args, **kwargs):
        raise AssertionError("torch.cuda.is_bf16_supported initialises CUDA in the parent process")

    monkeypatch.setattr(devices, "gpu_compute_capabilities", lambda: capabilities)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", initialises_cuda)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert devices.training_precision("bf16-mixed", accelerator) == expected
    if expected == "16-mixed":  # never pure fp16: without loss scaling Adam's eps underflows
        assert devices.training_precision("bf16-true", accelerator) == "16-mixed"
    assert devices.training_precision("32-true", accelerator) == "32-true"


@pytest.mark.skipif("__import__('torch').cuda.is_available()", reason="a machine without a GPU")
def test_without_an_nvidia_driver_nvml_has_no_answer() -> None:
    from lenet_cli.devices import gpu_compute_capabilities

    assert gpu_compute_capabilities() is None
