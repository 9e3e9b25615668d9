"""The per-step savings of lenet_cli/overhead.py and friends keep what they replace correct."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from conftest import TINY, compose_train
from torch.nn import functional as F

import lenet_cli.train as train_module
from lenet_cli.callbacks.progress import ProgressBar
from lenet_cli.overhead import quiet_profiler


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
    build = train_module.build_trainer

    def build_with_recorder(cfg):
        trainer = build(cfg)
        trainer.callbacks.append(recorder)
        return trainer

    monkeypatch.setattr(train_module, "build_trainer", build_with_recorder)
    out = tmp_path / "run"
    overrides = [f"data.root={tiny_data}", *TINY, "callbacks=none", "data.batch_size=48"]
    cfg = compose_train([*overrides, "label_smoothing=0.1", "test=false"], out)
    train_module.train(cfg)
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
    import lenet_cli.callbacks.progress as progress

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


def test_default_trainer_gets_the_quiet_profiler_and_a_chosen_profiler_is_kept(
    tmp_path: Path,
) -> None:
    quiet = train_module.build_trainer(compose_train(["callbacks=none"], tmp_path / "a"))
    assert type(quiet.profiler).__name__ == "QuietProfiler"
    with quiet.profiler.profile("anything") as inside:
        assert inside is None
    chosen = train_module.build_trainer(
        compose_train(["callbacks=none", "++trainer.profiler=simple"], tmp_path / "b")
    )
    assert isinstance(chosen.profiler, pl.profilers.SimpleProfiler)
    assert isinstance(quiet_profiler(), pl.profilers.PassThroughProfiler)


@pytest.mark.parametrize(
    ("strategy", "kept"), [("auto", False), ("ddp", False), ("ddp_fork", True)]
)
def test_lightning_nvml_check_is_undone_unless_the_strategy_forks(
    strategy: str, kept: bool
) -> None:
    code = (
        "import os\n"
        "import pytorch_lightning\n"
        "from lenet_cli.overhead import use_plain_cuda_check\n"
        "assert os.environ['PYTORCH_NVML_BASED_CUDA_CHECK'] == '1'  # set by Lightning's import\n"
        f"use_plain_cuda_check('{strategy}')\n"
        "print(os.environ.get('PYTORCH_NVML_BASED_CUDA_CHECK'))\n"
    )
    # As a sweep worker would start: the variable inherited from a parent that imported Lightning.
    env = {**os.environ, "PYTORCH_NVML_BASED_CUDA_CHECK": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == ("1" if kept else "None")


def test_module_hook_name_fast_path_keeps_nn_module_behaviour(tmp_path: Path) -> None:
    from lenet_cli.config import plain_config
    from lenet_cli.module import LeNetModule

    plain = plain_config(compose_train(["model=tutorial"], tmp_path))
    module = LeNetModule(plain["model"], plain["optimizer"], None)
    module._current_fx_name = "training_step"
    assert module._current_fx_name == "training_step"
    assert module.__dict__["_current_fx_name"] == "training_step"
    module.extra = torch.nn.Parameter(torch.zeros(1))  # other attributes: nn.Module's rules
    assert "extra" in dict(module.named_parameters())
    assert "extra" not in module.__dict__


FAULTS = """
import resource, torch
from lenet_cli.overhead import keep_freed_memory
applied = keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(1, 21):  # growing activations, 1 MB to 20 MB, each written and freed
    t = torch.empty(i * 262_144).fill_(1.0)
    del t
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
# glibc's default maps each of these afresh (above its adaptive mmap threshold) and faults in
# all 210 MB page by page (~54 k faults); with the setting the heap grows once to 20 MB (~8 k).


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_freed_tensor_memory_is_reused_instead_of_faulted_back_in() -> None:
    def run(extra_env: dict[str, str]) -> tuple[str, int]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
        out = subprocess.run(
            [sys.executable, "-c", FAULTS],
            capture_output=True,
            text=True,
            env={**env, **extra_env},
            check=True,
        ).stdout.split()
        return out[0], int(out[1])

    applied, tuned = run({})
    skipped, default = run({"MALLOC_ARENA_MAX": "4"})  # the user's own malloc settings win
    assert (applied, skipped) == ("True", "False")
    assert tuned * 3 < default
