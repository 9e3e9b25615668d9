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
from omegaconf import OmegaConf

from lenet_cli.sweeps.ddp_job import sweep_job
from lenet_cli.sweeps.study import JOURNAL_FILE, open_storage, prunes

SCORE = "val/acc_best"  # what lenet-train returns and the sweeper tells Optuna


def trial_pruning() -> TrialPruning | None:
    """The pruning callback of a trial of an Optuna search with a pruner, else None. A DDP child
    of a sweep job (ddp_job.py) reads the sweep's settings from its multirun.yaml."""
    if job := sweep_job():
        sweep_dir, number = Path(job["sweep_dir"]), int(job["num"])
        sweeper = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.sweeper
    elif HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        hydra_cfg = HydraConfig.get()
        sweep_dir, number, sweeper = Path(hydra_cfg.sweep.dir), hydra_cfg.job.num, hydra_cfg.sweeper
    else:
        return None
    if not prunes(pruner := sweeper.get("pruner")):
        return None
    storage = str(sweeper.get("storage") or sweep_dir / JOURNAL_FILE)
    return TrialPruning(storage, str(sweeper.study_name), number, pruner)


class TrialPruning(pl.Callback):
    """Report the score after each validation (step: the epoch from 0, so that trials with other
    batch sizes compare) and stop when Optuna says prune: rank 0 asks, every rank stops at the same
    step, and `pruned_epoch` (from 1) is set."""

    def __init__(self, storage: str, study_name: str, number: int, pruner: Any) -> None:
        self.storage, self.study_name, self.number = storage, study_name, number
        self.pruner_config = pruner
        self.trial: Any = None
        self.reported: set[int] = set()
        self.pruned_epoch: int | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero or self.trial is not None:
            return
        import optuna  # only in a trial of a search with a pruner

        storage = open_storage(self.storage)
        study = optuna.load_study(
            study_name=self.study_name, storage=storage, pruner=instantiate(self.pruner_config)
        )
        study_id = storage.get_study_id_from_name(self.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
        self.trial = optuna.trial.Trial(study, trial_id)
        # A continued trial (from its last.ckpt) reported its first epochs already.
        self.reported = set(storage.get_trial(trial_id).intermediate_values)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero:
            value, step = trainer.callback_metrics.get(SCORE), trainer.current_epoch
            if value is not None and step not in self.reported:  # one report per epoch
                self.trial.report(float(value), step)
                self.reported.add(step)
                prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune, src=0):
            self.pruned_epoch = trainer.current_epoch + 1
            trainer.should_stop = True  # the epoch ends as usual: last.ckpt and events kept
