"""The GPU path where it runs on the CPU: every precision, deterministic runs without cuDNN's
autotuner, and a pre-check that leaves CUDA uninitialised (scripts/gpu_check.sh does the rest on
a GPU)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import pytorch_lightning  # noqa: F401  (sets PYTORCH_NVML_BASED_CUDA_CHECK once, on import)
import torch
from conftest import TINY, compose_train

from lenet_cli.cli.train import train
from lenet_cli.config import PRECISIONS
from lenet_cli.devices import check_devices
from lenet_cli.errors import ConfigError, DeviceError

SHORT = [*TINY, "callbacks.progress_bar=null", "callbacks.pictures.probe_samples=40"]
SHORT += ["scheduler=none", "trainer.limit_train_batches=4"]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_the_config_accepts_trains_or_is_refused(
    tmp_path: Path, tiny_data: Path, precision: str
) -> None:
    out = tmp_path / "run"
    # float16 holds no eps below 6.1e-5: Adam's default 1e-8 is refused (the next test).
    eps = ["++optimizer.eps=1e-4"] if precision == "16-true" else []
    cfg = compose_train(
        [f"data.root={tiny_data}", *SHORT, f"trainer.precision={precision}", *eps], out
    )
    if precision == "transformer-engine":  # needs a CUDA GPU and NVIDIA's package
        with pytest.raises(DeviceError, match="transformer_engine"):
            train(cfg)
        return
    train(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["test/acc"] > 0


def test_16_true_with_an_eps_float16_cannot_hold_is_refused(tmp_path: Path) -> None:
    cfg = compose_train(["trainer.precision=16-true"], tmp_path)
    with pytest.raises(ConfigError, match="eps=1e-08") as refused:
        check_devices(cfg.trainer, cfg.optimizer)
    assert "++optimizer.eps=1e-4" in refused.value.fix
    for fine in (["optimizer=sgd"], ["++optimizer.eps=1e-4"], ["trainer.precision=16-mixed"]):
        cfg = compose_train(["trainer.precision=16-true", *fine], tmp_path)
        check_devices(cfg.trainer, cfg.optimizer)


@pytest.mark.parametrize("deterministic", [True, False])
def test_deterministic_switches_the_cudnn_autotuner_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deterministic: bool
) -> None:
    from omegaconf import OmegaConf

    from lenet_cli.console import as_text
    from lenet_cli.models import build_network
    from lenet_cli.training.card import run_card
    from lenet_cli.training.trainer import build_trainer

    # The opposite of what the Trainer must set (monkeypatch restores it afterwards).
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", deterministic)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # (set by Lightning when true)
    gpu = ["trainer=gpu", "trainer.accelerator=cpu", "trainer.precision=32-true"]  # benchmark: true
    cfg = compose_train([*gpu, f"trainer.deterministic={deterministic}"], tmp_path)
    try:
        trainer = build_trainer(cfg.trainer, [], [])
        assert torch.backends.cudnn.benchmark is not deterministic
        net = build_network(OmegaConf.to_container(cfg.model, resolve=True))
        card = as_text(run_card(cfg, trainer, net, {"train": 1, "val": 1, "test": 1}))
    finally:
        torch.use_deterministic_algorithms(False)
    assert ("deterministic (cuDNN benchmark off)" in card) is deterministic


def test_the_precheck_leaves_cuda_uninitialised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked without PYTORCH_NVML_BASED_CUDA_CHECK=1, torch.cuda.is_available() initialises CUDA
    (cudaGetDeviceCount), after which a forked process cannot use the GPU (ddp_fork)."""
    import lenet_cli.cli.app as app
    from lenet_cli.cli.train import check_run

    calls: list[tuple[str, str | None]] = []

    def recorded(name: str):
        real = getattr(torch.cuda, name)

        def call(*args, **kwargs):
            calls.append((name, os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")))
            return real(*args, **kwargs)

        return call

    for name in ("is_available", "device_count"):
        monkeypatch.setattr(torch.cuda, name, recorded(name))
    # As in a fresh lenet-train process: Lightning (which sets the variable) not yet imported.
    monkeypatch.delenv("PYTORCH_NVML_BASED_CUDA_CHECK")
    at_task: dict[str, object] = {}

    def task(cfg, *checked) -> None:
        at_task.update(calls=list(calls), initialised=torch.cuda.is_initialized())

    argv = ["lenet-train", "trainer.accelerator=auto", f"hydra.run.dir={tmp_path / 'run'}"]
    monkeypatch.setattr(sys, "argv", argv)
    app.run_app(task, "train", check_run=check_run)
    assert ("device_count", None) in at_task["calls"]  # the device check ran...
    assert ("is_available", None) not in at_task["calls"]  # ...asking NVML, not CUDA
    assert at_task["initialised"] is False
