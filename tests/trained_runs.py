"""lenet-train runs made once per test session and shared by the tests that only read them.

The pictures, terminal, evaluate, predict, export and README tests read the same tiny run, and
the real-MNIST tests the same short real run. Under pytest-xdist each worker is its own process,
so the runs live in the folder the workers share (the parent of each worker's temporary folder)
and the first worker to ask makes them under a file lock; the others wait and read them.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path

from conftest import REAL_DATA, TINY, compose_train, run_cli, run_folders


def _once(root: Path, name: str, done: str, make: Callable[[Path], None]) -> Path:
    """root/name, made by make(folder) unless a worker made it already (folder/done exists)."""
    # pytest-xdist gives each worker <session>/popen-gwN/; without it there is one process.
    folder = (root.parent if "PYTEST_XDIST_WORKER" in os.environ else root) / name
    with open(folder.with_suffix(".lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if not (folder / done).is_file():
            make(folder)
    return folder


def _run_command(cwd: Path, overrides: list[str], data: Path) -> None:
    cwd.mkdir(exist_ok=True)
    result = run_cli(*overrides, cwd=cwd, data=data, env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr[-3000:]
    (cwd / "stderr.txt").write_text(result.stderr)
    (cwd / "stdout.txt").write_text(result.stdout)  # written last: the run is complete


def tiny_run(root: Path, data: Path) -> Path:
    """A run folder of LeNet-5 on the tiny synthetic data, made by the command a user runs in an
    80-column terminal: one epoch with the default callbacks (checkpoints/best.ckpt,
    metrics.json, every TensorBoard picture)."""
    command = ["model=classic", *TINY]
    cwd = _once(root, "tiny-train", "stdout.txt", lambda cwd: _run_command(cwd, command, data))
    (folder,) = run_folders(cwd)
    return folder


def tiny_output(root: Path, data: Path) -> tuple[str, str]:
    """What the command of the tiny run printed: stdout and stderr."""
    cwd = tiny_run(root, data).parents[2]
    return (cwd / "stdout.txt").read_text(), (cwd / "stderr.txt").read_text()


def _train_real(folder: Path) -> None:
    from lenet_cli.cli.train import train

    short = ["model=modern", "trainer.max_epochs=1", "++trainer.limit_train_batches=200",
             "optimizer.lr=0.003", "callbacks=none"]  # fmt: skip
    train(compose_train([f"data.root={Path(str(REAL_DATA)).resolve()}", *short], folder))


def real_run(root: Path) -> Path:
    """A short run of the modern LeNet-5 on the real MNIST at LENET_DATA_DIR (~97% accurate),
    trained in this process: its readers need only checkpoints/best.ckpt and metrics.json."""
    return _once(root, "real-train", "metrics.json", _train_real)


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())
