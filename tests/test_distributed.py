"""Two-process DDP on CPU (gloo) under Hydra: one run folder, metrics over the whole test set."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import TINY, run_cli, run_folders
from omegaconf import OmegaConf

from lenet_cli.models import build_network
from lenet_cli.training.mnist_files import ensure_files, load_split


def test_ddp_cpu_leaves_one_run_folder_and_exact_test_accuracy(
    tmp_path: Path, tiny_data: Path
) -> None:
    # 400 test images on 2 ranks in batches of 150: unequal last batches, nothing padded.
    result = run_cli(
        "trainer=ddp_cpu",
        *TINY,
        "data.eval_batch_size=150",
        "callbacks.progress_bar=null",
        cwd=tmp_path,
        data=tiny_data,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_folders(tmp_path)
    assert [p for p in tmp_path.rglob(".hydra")] == [run / ".hydra"]  # no stray child folders
    assert [p.name for p in run.glob("*.log")] == ["train.log"]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    config = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert "DDPStrategy" in config.trainer.strategy._target_ and config.trainer.devices == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_batch_size"] == 2 * 50

    # The checkpoint evaluated in one process on the same test set gives the same accuracy.
    checkpoint = torch.load(
        run / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu"
    )
    net = build_network(checkpoint["hyper_parameters"]["model"]).eval()
    net.load_state_dict(
        {k[4:]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    )
    images, labels = load_split(ensure_files(tiny_data, "MNIST", download=False), "test", 10)
    with torch.no_grad():
        predictions = net(images.float() / 255).argmax(1)
    single = (predictions == labels).float().mean().item()
    assert abs(single - metrics["test/acc"]) < 1e-6


def test_torchrun_processes_share_one_run_folder(tmp_path: Path, tiny_data: Path) -> None:
    import os
    import subprocess
    import sys

    torchrun = Path(sys.executable).parent / "torchrun"
    lenet_train = Path(sys.executable).parent / "lenet-train"
    env = {**os.environ, "LENET_DATA_DIR": str(tiny_data)}
    command = [
        str(torchrun),
        "--standalone",
        "--nproc-per-node=2",
        str(lenet_train),
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        *TINY,
        "callbacks.progress_bar=null",
        "logger.images=false",
    ]
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    assert run.name.startswith("torchrun-")
    assert [p for p in tmp_path.rglob(".hydra")] == [run / ".hydra"]
    assert (run / "metrics.json").exists() and [p.name for p in run.glob("*.log")] == ["train.log"]
