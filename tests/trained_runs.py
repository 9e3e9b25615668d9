"""lenet-train runs made once per test session and shared by the evaluate, predict, export tests.

The cache is this module's own: Python imports it once per session, so a run trained for
test_evaluate.py is reused by test_predict.py and test_export.py instead of training again.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import REAL_DATA, TINY, run_cli, run_folders

_RUNS: dict[str, Path] = {}


def _train(cwd: Path, overrides: list[str]) -> Path:
    # Run the command a user runs (not train() in this process): the run folder is the real one.
    cwd.mkdir(parents=True)
    result = run_cli(*overrides, "callbacks=none", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = run_folders(cwd)
    assert (folder / "checkpoints" / "best.ckpt").is_file()
    return folder


def tiny_run(root: Path, data: Path) -> Path:
    """A run folder (checkpoints/best.ckpt, metrics.json) of LeNet-5 on the tiny synthetic data."""
    if "tiny" not in _RUNS:
        _RUNS["tiny"] = _train(root / "tiny-train", [f"data.root={data}", *TINY, "model=classic"])
    return _RUNS["tiny"]


def real_run(root: Path) -> Path:
    """A short run of the modern LeNet-5 on the real MNIST at LENET_DATA_DIR (~97% accurate)."""
    if "real" not in _RUNS:
        short = ["model=modern", "trainer.max_epochs=1", "++trainer.limit_train_batches=200",
                 "optimizer.lr=0.003"]  # fmt: skip
        data = f"data.root={Path(str(REAL_DATA)).resolve()}"
        _RUNS["real"] = _train(root / "real-train", [data, *short])
    return _RUNS["real"]


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())
