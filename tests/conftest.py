"""Shared fixtures: tiny MNIST-format files written by the tests, and helpers to run lenet-train.

Nothing here downloads. The synthetic digits are learnable (each class draws a bar at its own
place), so a tiny fit can be checked for learning, not only for running.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REAL_DATA = os.environ.get("LENET_DATA_DIR")


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n 28x28 uint8 images: class c has a bright bar at row 4 + 2c, plus noise and a shift."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        row, col = 4 + 2 * int(c) + rng.integers(-1, 2), rng.integers(4, 10)
        images[i, row : row + 2, col : col + 14] = 255
    return images, labels


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int = 1200, n_test: int = 400, dataset: str = "MNIST") -> Path:
    raw = root / dataset / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = synthetic_digits(n, seed)
        write_idx(raw / f"{split}-images-idx3-ubyte", images)
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A data root with tiny MNIST-format files (1,200 train / 400 test synthetic digits)."""
    return write_mnist(tmp_path_factory.mktemp("data"))


# Overrides that make any run take a second or two on the tiny data.
TINY = [
    "trainer.max_epochs=1",
    "data.val_size=200",
    "data.batch_size=50",
    "data.eval_batch_size=200",
    "trainer.log_every_n_steps=5",
]


def run_cli(
    *args: str,
    cwd: Path,
    data: Path | None = None,
    env: dict | None = None,
    command: str = "lenet-train",
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run a lenet-cli command the way a user does, in cwd, with the data root pointed at data."""
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update({"COLUMNS": "120", **(env or {})})
    if data is not None:
        full_env["LENET_DATA_DIR"] = str(data)
    return subprocess.run(
        [str(BIN / command), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_folders(cwd: Path) -> list[Path]:
    """Run folders (outputs/<date>/<time>/) under cwd."""
    return sorted(
        p for p in (cwd / "outputs").glob("*/*") if p.is_dir() and p.parent.name != "multirun"
    )


def compose_train(overrides: list[str], output_dir: Path):
    """The config lenet-train would compose, with its run folder set to output_dir."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_module(config_module="lenet_cli.conf", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[*overrides, f"paths.output_dir={output_dir}"],
            return_hydra_config=True,
        )
    HydraConfig().set_config(cfg)
    return cfg


def service_env(script: Path, what: str) -> dict[str, str]:
    """Start a local service (scripts/slurm_cluster.sh, scripts/postgres.sh: `start`, then
    `env`) and return its settings; skip the test, with the reason, where it cannot start."""
    started = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.skip(f"no {what}: {(started.stderr or started.stdout).strip()[-300:]}")
    lines = subprocess.run(["bash", str(script), "env"], capture_output=True, text=True, check=True)
    pairs = (line.strip().removeprefix("export ") for line in lines.stdout.splitlines())
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)
