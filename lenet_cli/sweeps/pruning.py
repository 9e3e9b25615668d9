"""Pruning for `hparams_search=optuna hydra/sweeper/pruner=...`: each job reports its score to
its own trial after every validation and stops when the study's pruner says so. Not
optuna-integration's callback: it imports `lightning.pytorch`, not `pytorch_lightning`, and needs
the trial object, which lives in the sweeper's process. Here the job opens the study and finds
its trial by number (the job's), so pruning works under every launcher and in DDP children."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lenet_cli.sweeps.ddp_job import sweep_job
from lenet_cli.sweeps.study import JOURNAL_FILE, open_storage, prunes


def trial_pruning() -> TrialPruning | None:
    """The pruning callback of a trial of an Optuna search with a pruner, else None. A DDP child
    of a sweep job (ddp_job.py) reads the sweep's settings from its multirun.yaml."""
    if job := sweep_job():
        sweep_dir, number = Path(job["sweep_dir"]), int(job["num"])
        sweeper = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.sweeper
    elif HydraConfig.initialized() and (hydra_cfg := HydraConfig.get()).mode == RunMode.MULTIRUN:
        sweep_dir, number, sweeper = Path(hydra_cfg.sweep.dir), hydra_cfg.job.num, hydra_cfg.sweeper
    else:
        return None
    return TrialPruning(sweeper, sweep_dir, number) if prunes(sweeper.get("pruner")) else None


class TrialPruning(pl.Callback):
    """Report val/acc_best (the value lenet-train returns) after each validation (step: the epoch
    from 0, so that trials with other batch sizes compare) and stop when Optuna says prune: rank 0
    asks, every rank stops at the same step, and `pruned_epoch` (from 1) is set."""

    def __init__(self, sweeper: DictConfig, sweep_dir: Path, number: int) -> None:
        self.sweeper, self.sweep_dir, self.number = sweeper, sweep_dir, number
        self.trial: Any = None  # and `reported`, the steps it holds: set on rank 0 (setup)
        self.pruned_epoch: int | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero or self.trial is not None:
            return
        import optuna  # only in a trial of a search with a pruner

        name, pruner = str(self.sweeper.study_name), instantiate(self.sweeper.pruner)
        storage = open_storage(str(self.sweeper.get("storage") or self.sweep_dir / JOURNAL_FILE))
        study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
        study_id = storage.get_study_id_from_name(name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
        self.trial = optuna.trial.Trial(study, trial_id)
        # A continued trial (from its last.ckpt) reported its first epochs already.
        self.reported = set(storage.get_trial(trial_id).intermediate_values)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero:
            value, step = trainer.callback_metrics.get("val/acc_best"), trainer.current_epoch
            if value is not None and step not in self.reported:  # one report per epoch
                self.trial.report(float(value), step)
                self.reported.add(step)
                prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune, src=0):
            self.pruned_epoch = trainer.current_epoch + 1
            trainer.should_stop = True  # the epoch ends as usual: last.ckpt and events kept
