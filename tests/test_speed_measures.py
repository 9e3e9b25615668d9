"""The speed measures that earned their place (scripts/bench.py, part `measures`) keep what they
replace correct, and the process-wide ones stay out of library calls."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from conftest import TINY, compose_train, run_cli, run_folders
from torch.nn import functional as F

import lenet_cli.training.trainer as trainer_module
from lenet_cli.cli.train import train
from lenet_cli.training.callbacks.progress import ProgressBar


class Recorder(pl.Callback):
    """Keeps every training batch's logits and labels, as the network produced them."""

    def __init__(self) -> None:
        self.logits: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.labels.append(batch[1].clone())
        self._hook = pl_module.net.register_forward_hook(
            lambda m, i, out: self.logits.append(out.detach().clone())
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._hook.remove()


def test_epoch_train_metrics_equal_the_mean_over_every_training_sample(
    tmp_path: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    build = trainer_module.training_trainer

    def build_with_recorder(cfg, **kwargs):
        trainer = build(cfg, **kwargs)
        trainer.callbacks.append(recorder)
        return trainer

    monkeypatch.setattr(trainer_module, "training_trainer", build_with_recorder)
    out = tmp_path / "run"
    overrides = [f"data.root={tiny_data}", *TINY, "callbacks=none", "data.batch_size=48"]
    cfg = compose_train([*overrides, "label_smoothing=0.1", "test=false"], out)
    train(cfg)
    metrics = json.loads((out / "metrics.json").read_text())

    logits, labels = torch.cat(recorder.logits), torch.cat(recorder.labels)
    assert len(recorder.labels) > 2 and len(recorder.labels[-1]) != 48  # a short last batch too
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    loss = F.cross_entropy(logits, labels, label_smoothing=0.1).item()
    assert metrics["train/acc"] == pytest.approx(accuracy, abs=1e-6)
    assert metrics["train/loss"] == pytest.approx(loss, rel=1e-5)


def test_progress_bar_moves_a_few_times_a_second_and_always_at_the_epoch_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lenet_cli.training.callbacks.progress as progress

    drawn: list[int] = []
    monkeypatch.setattr(
        pl.callbacks.RichProgressBar,
        "on_train_batch_end",
        lambda self, trainer, module, outputs, batch, batch_idx: drawn.append(batch_idx),
    )
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    bar = ProgressBar(refresh_rate=10)
    bar._trainer = SimpleNamespace(num_training_batches=500, max_epochs=1, max_steps=-1)
    for batch_idx in range(500):  # 33 batches a second: every 4th one is drawn
        bar.on_train_batch_end(None, None, None, None, batch_idx)
        clock[0] += 0.03
    assert drawn[:3] == [0, 4, 8] and drawn[-1] == 499
    assert len(drawn) == 126  # every 4th of 500, plus the epoch's last batch


def test_a_chosen_profiler_reaches_the_trainer(tmp_path: Path) -> None:
    default = trainer_module.training_trainer(compose_train(["callbacks=none"], tmp_path / "a"))
    assert type(default.profiler) is pl.profilers.PassThroughProfiler  # Lightning's own
    chosen = trainer_module.training_trainer(
        compose_train(["callbacks=none", "++trainer.profiler=simple"], tmp_path / "b")
    )
    assert isinstance(chosen.profiler, pl.profilers.SimpleProfiler)


@pytest.mark.parametrize(
    ("strategy", "kept"), [("auto", False), ("ddp", False), ("ddp_fork", True)]
)
def test_lightning_nvml_check_is_undone_unless_the_strategy_forks(
    strategy: str, kept: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lenet_cli.cli.process import use_plain_cuda_check

    # As Lightning's import leaves it (and as a sweep worker inherits it from its parent).
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    use_plain_cuda_check(strategy)
    assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == ("1" if kept else None)


def test_the_library_train_function_leaves_the_process_settings_alone(
    tmp_path: Path, tiny_data: Path
) -> None:
    # Lightning sets the NVML variable when imported; only the console command undoes it.
    assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1"
    out = tmp_path / "run"
    train(compose_train([f"data.root={tiny_data}", *TINY, "callbacks=none", "test=false"], out))
    assert (out / "metrics.json").exists()
    assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1"


def test_the_console_command_applies_them_before_its_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lenet_cli.cli.app as app

    seen: dict[str, str | None] = {}

    def task(cfg, checked=None) -> None:
        seen["nvml"] = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")

    import lenet_cli.cli.process as process

    quick: list[str] = []
    monkeypatch.setattr(process, "skip_teardown_at_exit", lambda: quick.append("registered"))
    monkeypatch.setattr(process, "exit_quickly", lambda code=0: quick.append(f"armed {code}"))
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    monkeypatch.setattr(sys, "argv", ["lenet-train", f"hydra.run.dir={tmp_path / 'run'}"])
    app.run_app(task, "train", tune_process=True)
    assert seen == {"nvml": None} and quick == ["registered", "armed 0"]


def test_the_quick_exit_still_runs_exit_handlers_registered_during_the_run(
    tmp_path: Path, tiny_data: Path
) -> None:
    marker = tmp_path / "marker.txt"
    result = run_cli(
        *TINY,
        "callbacks=none",
        "+callbacks.marker._target_=injected.AtExitMarker",
        f"+callbacks.marker.path={marker}",
        cwd=tmp_path,
        data=tiny_data,
        env={"PYTHONPATH": str(Path(__file__).parent)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert marker.read_text() == "exit handler ran\n"
    (run,) = run_folders(tmp_path)
    assert "lenet-train: done" in result.stdout and (run / "metrics.json").exists()
