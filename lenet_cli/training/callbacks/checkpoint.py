"""Checkpoints that a resumed run continues from: `last.ckpt` after every epoch and on an interrupt
(interrupts.py stops every process before the same batch; the loader is stateful, so a resume
repeats nothing), and a run resumed into a new folder carries the old best checkpoint and score."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lenet_cli.files import write_bytes_atomic
from lenet_cli.training import interrupts


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint with last.ckpt on an interrupt and after every epoch, best carried over."""

    interrupted_checkpoint: str | None = None  # last.ckpt written on an interrupt
    interrupted_step: int | None = None  # the optimiser steps it holds

    def __init__(self, *args: Any, save_last: bool | None = None, **kwargs: Any) -> None:
        # What ModelCheckpoint lacks: since Lightning 2.5 save_last=True writes last.ckpt only
        # at the steps a top-k checkpoint is saved, so after an epoch that did not improve,
        # last.ckpt is older than the run and a kill -9 loses more than the current epoch.
        super().__init__(*args, save_last=False, **kwargs)
        self.keep_last = bool(save_last)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)  # the best checkpoint, when it improved
        quick_check = trainer.sanity_checking or trainer.fast_dev_run
        if self.keep_last and self.dirpath and not quick_check:
            self.last_model_path = os.path.join(self.dirpath, "last.ckpt")  # part of its state
            trainer.save_checkpoint(self.last_model_path, weights_only=self.save_weights_only)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            interrupts.arm(first=True)

    # The trainer installs its own SIGTERM handler after setup; ours goes back on top of it.
    # (lenet-train's fit() disarms: Lightning calls teardown only after a fit that succeeded.)
    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            interrupts.arm()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        interrupts.arm()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        super().on_exception(trainer, pl_module, exception)
        # Only a first Ctrl-C or SIGTERM stops at a step boundary (SIGTERMException); a second
        # Ctrl-C raises anywhere, mid-step, and must not overwrite last.ckpt with half a step.
        interrupted = isinstance(exception, SIGTERMException)
        quick_check = trainer.sanity_checking or trainer.fast_dev_run
        if interrupted and trainer.state.fn == "fit" and self.dirpath and not quick_check:
            path = os.path.join(self.dirpath, "last.ckpt")
            self.last_model_path = path  # recorded in the checkpoint: a run continued here owns it
            trainer.save_checkpoint(path, weights_only=self.save_weights_only)
            self.interrupted_checkpoint, self.interrupted_step = path, trainer.global_step

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # What ModelCheckpoint lacks: in a new dirpath it keeps only best_model_path, pointing
        # into the old run, and forgets its score; here the file and the score come along.
        old_best = state_dict.get("best_model_path")
        moved = self.dirpath and state_dict.get("dirpath") not in (None, "", self.dirpath)
        if not (moved and old_best and Path(old_best).exists()):
            super().load_state_dict(state_dict)
            return
        new_best = os.path.join(self.dirpath, os.path.basename(old_best))
        _copy_atomic(old_best, new_best)
        self.best_model_path = self.kth_best_model_path = new_best
        self.best_model_score = self.kth_value = state_dict["best_model_score"]
        self.best_k_models = {new_best: state_dict["best_model_score"]}


@rank_zero_only
def _copy_atomic(source: str, target: str) -> None:
    write_bytes_atomic(target, Path(source).read_bytes())
