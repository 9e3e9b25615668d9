"""Interrupted runs resume exactly; parallel runs never share a folder; divergence stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import BIN, run_cli, run_folders, write_mnist

# Long enough to interrupt mid-epoch, short enough for the suite.
RESUMABLE = [
    "model=modern",
    "callbacks=none",
    "trainer.deterministic=true",
    "seed=1",
    "trainer.max_epochs=3",
    "data.val_size=500",
    "data.batch_size=50",
    "data.eval_batch_size=500",
    "trainer.log_every_n_steps=20",
]


@pytest.fixture(scope="module")
def medium_data(tmp_path_factory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("medium"), n_train=12000, n_test=500)


def _env(data: Path) -> dict:
    env = {**os.environ, "LENET_DATA_DIR": str(data), "COLUMNS": "200"}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def test_sigterm_writes_last_ckpt_and_resume_matches_an_uninterrupted_run(
    tmp_path: Path, medium_data: Path
) -> None:
    (tmp_path / "a").mkdir()
    straight = run_cli(*RESUMABLE, cwd=tmp_path / "a", data=medium_data)
    assert straight.returncode == 0, straight.stderr[-2000:]
    (run_a,) = run_folders(tmp_path / "a")
    expected = json.loads((run_a / "metrics.json").read_text())

    cwd = tmp_path / "b"
    cwd.mkdir()
    process = subprocess.Popen(
        [str(BIN / "lenet-train"), *RESUMABLE],
        cwd=cwd,
        env=_env(medium_data),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(cwd.glob("outputs/*/*/checkpoints/last.ckpt")):
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)  # during the second epoch
    sent = time.time()
    out, err = process.communicate(timeout=60)
    assert time.time() - sent < 10
    assert process.returncode == 130, err[-2000:]
    text = " ".join(err.split())
    assert "Resume with" in text and "ckpt_path=" in text and "Traceback" not in err
    (run_b,) = run_folders(cwd)
    assert not (run_b / "metrics.json").exists()
    last = run_b / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    assert 0 < state["current"]["completed"] < 220  # stopped inside an epoch, not at its end

    resumed = run_cli(*RESUMABLE, f"ckpt_path={last}", cwd=cwd, data=medium_data)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run_c = [r for r in run_folders(cwd) if r != run_b][0]
    got = json.loads((run_c / "metrics.json").read_text())
    assert got["test/loss"] == expected["test/loss"]  # bit for bit
    assert (
        got["test/acc"] == expected["test/acc"] and got["val/acc_best"] == expected["val/acc_best"]
    )


def test_resume_shorthand_finds_the_run(tmp_path: Path, tiny_data: Path) -> None:
    first = run_cli(
        "model=tutorial",
        "callbacks=none",
        "trainer.max_epochs=1",
        "data.val_size=200",
        "scheduler=step",
        cwd=tmp_path,
        data=tiny_data,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    (run,) = run_folders(tmp_path)
    again = run_cli(f"resume={run}", "trainer.max_epochs=2", cwd=tmp_path, data=tiny_data)
    assert again.returncode == 0, again.stderr[-2000:]
    new = [r for r in run_folders(tmp_path) if r != run][0]
    config = (new / ".hydra" / "config.yaml").read_text()
    assert f"ckpt_path: {run}/checkpoints/last.ckpt" in config and "name: tutorial" in config
    assert json.loads((new / "metrics.json").read_text())["epochs"] == 2


def test_three_runs_started_together_get_three_complete_folders(
    tmp_path: Path, tiny_data: Path
) -> None:
    args = [
        str(BIN / "lenet-train"),
        "model=tutorial",
        "callbacks=none",
        "trainer.max_epochs=1",
        "data.val_size=200",
        "++trainer.limit_train_batches=3",
    ]
    processes = [
        subprocess.Popen(
            args,
            cwd=tmp_path,
            env=_env(tiny_data),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    assert [p.wait(timeout=180) for p in processes] == [0, 0, 0]
    folders = run_folders(tmp_path)
    assert len(folders) == 3
    assert all(
        (f / "metrics.json").exists() and (f / ".hydra" / "config.yaml").exists() for f in folders
    )


def test_diverging_loss_stops_with_the_step_and_advice(tmp_path: Path, tiny_data: Path) -> None:
    result = run_cli(
        "model=modern",
        "optimizer=sgd",
        "optimizer.lr=1e12",
        "scheduler=none",
        "trainer.max_epochs=1",
        "data.val_size=200",
        cwd=tmp_path,
        data=tiny_data,
    )
    assert result.returncode == 1
    text = " ".join(result.stderr.split())
    assert "at step" in text and "optimizer.lr=1e+11" in text and "Traceback" not in result.stderr
    (run,) = run_folders(tmp_path)
    assert (run / ".hydra" / "config.yaml").exists() and (run / "train.log").exists()
