"""The LightningModule: one network, cross-entropy on logits, accuracy, optimiser and schedule."""

from __future__ import annotations

import inspect
import math
import time
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch.nn import functional as F
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lenet_cli.errors import ConfigError, TrainingError
from lenet_cli.models import build_network


class LeNetModule(pl.LightningModule):
    """Trains any network of the family. The hyperparameters saved in every checkpoint are
    plain dicts (model, optimizer, scheduler), so a checkpoint alone rebuilds its network."""

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build_network(model)
        # Read on every step, so kept as plain attributes (hparams lookups cost microseconds).
        self._channels_last = bool(model.get("channels_last"))
        self._label_smoothing = float(label_smoothing)
        if self._channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if model.get("compile"):
            self.net.compile()  # in place: the checkpoint keeps its weights under "net."
        num_classes = int(model["num_classes"])
        # Steps add their loss and correct answers to two tensors in place (and their count to an
        # int), weighted means at the epoch's end (averaged across processes); keeping logits
        # costs +100 MB. A mid-epoch checkpoint's sums until the next epoch starts.
        self.train_acc, self.train_loss = MeanMetric(), MeanMetric()
        self._epoch_sums: list = [0.0, 0.0, 0]  # loss sum, correct, count
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        # Losses as metrics too: averaged over every sample of the split, across processes.
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # saved in checkpoints: a resumed run keeps its best
        # [true, predicted]: test/acc, per-class accuracy (recall) and precision all follow from it.
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.mistakes_kept = 0  # how many wrong test answers to keep (set by who draws them)
        self._mistakes: dict[str, torch.Tensor] = {}
        self.test_outcome: dict[str, Any] = {}  # numpy arrays, set at the end of the test
        self.samples_seen = 0  # training images this process has stepped over (for samples/s)
        self.fit_seconds = 0.0  # the training loop itself: its start to the end of the last epoch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1], shape (N, C, H, W) -> logits (N, classes)."""
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self._label_smoothing)
        # Lightning's own cadence: the steps whose values reach the logger.
        log_now = (self.global_step + 1) % self.trainer.log_every_n_steps == 0
        # Reading the loss makes a GPU's host wait: there it is checked only when logged anyway.
        if log_now or self.device.type == "cpu":
            self._check_finite(loss)
        n = len(y)
        loss_sum, correct, _ = sums = self._epoch_sums  # a list: no tensor unbound per step
        loss_sum.add_(loss.detach(), alpha=n)
        correct.add_((logits.argmax(1) == y).sum())
        sums[2] += n
        self.samples_seen += n
        if log_now:  # self.log is not cheap either: only the steps that reach the logger
            self.log("train/loss_step", loss, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        loss_sum, correct, count = self._epoch_sums
        if count:
            self.train_loss.update(loss_sum / count, weight=count)
            self.train_acc.update(correct / count, weight=count)
        self.log("train/loss", self.train_loss)
        self.log("train/acc", self.train_acc)

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.val_loss(F.cross_entropy(logits, y), weight=len(y))  # no label smoothing here
        self.log("val/loss", self.val_loss, on_epoch=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.val_acc_best(self.val_acc.compute())
            self.log("val/acc_best", self.val_acc_best.compute())

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.test_loss(F.cross_entropy(logits, y), weight=len(y))
        self.test_confusion.update(logits, y)
        if self.mistakes_kept:
            self._keep_mistakes(x[:, 0], y, logits)
        self.log("test/loss", self.test_loss, on_epoch=True)

    def _keep_mistakes(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> None:
        """The `mistakes_kept` wrong answers given with the highest confidence so far, worst
        first (the earlier image first on a tie); per process. torchmetrics keeps counts only."""
        confidence, predicted = logits.float().softmax(1).max(1)
        new = {"confidence": confidence, "images": x.float(), "true": y, "predicted": predicted}
        wrong = predicted != y
        both = {k: torch.cat([self._mistakes.get(k, v[:0]), v[wrong]]) for k, v in new.items()}
        order = both["confidence"].argsort(descending=True, stable=True)[: self.mistakes_kept]
        self._mistakes = {k: v[order] for k, v in both.items()}

    def on_test_epoch_end(self) -> None:
        matrix = self.test_confusion.compute().cpu()  # summed over processes
        self.test_confusion.reset()
        right, images, said = matrix.diagonal(), matrix.sum(1), matrix.sum(0)
        self.log("test/acc", float(right.sum() / matrix.sum()))
        found = {  # 0 where undefined (no test image of the class, or never predicted)...
            "confusion": matrix,
            "acc_class": right / images.clamp(min=1),
            "precision_class": right / said.clamp(min=1),
        }
        self.test_outcome = {k: v.cpu().numpy() for k, v in (found | self._mistakes).items()}
        self._mistakes = {}
        # ...and left out of the logs rather than logged as 0.
        for k in range(len(right)):
            if images[k]:
                self.log(f"test/acc_class_{k}", float(found["acc_class"][k]))
            if said[k]:
                self.log(f"test/precision_class_{k}", float(found["precision_class"][k]))

    def _check_finite(self, loss: torch.Tensor) -> None:
        """Stop on a NaN or infinite loss in every process at the same step (one all-reduce), so
        a bad batch in one does not leave the others waiting in the next gradient all-reduce."""
        finite_here = math.isfinite(loss.item())
        if self.trainer.strategy.reduce_boolean_decision(finite_here, all=True):
            return
        seen = "non-finite in another process" if finite_here else str(loss.item())
        if not finite_here and self.trainer.world_size > 1:
            seen += f" in process {self.global_rank}"
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        error = TrainingError(
            f"The training loss became {seen} at step {self.global_step} (epoch "
            f"{self.current_epoch}, learning rate {lr:.3g}). The run was stopped; the checkpoints "
            "written so far are intact.",
            fix=f"Lower the learning rate, e.g. optimizer.lr={self.hparams.optimizer['lr'] / 10:g}"
            ", or clip gradients with ++trainer.gradient_clip_val=1.0.",
        )
        error.every_rank = True  # every process raises it: only the first shows it
        raise error

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning saves no random state: a resumed run draws the same dropout masks and
        # augmentations as one never interrupted; the epoch's running sums keep train/* whole.
        checkpoint["rng_states"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state_all()
        checkpoint["train_epoch_sums"] = [float(value) for value in self._epoch_sums]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        try:
            if self.trainer.state.fn != "fit":
                return
        except RuntimeError:  # loaded without a trainer (LeNetModule.load_from_checkpoint)
            return
        states = checkpoint.get("rng_states")
        if states:
            torch.set_rng_state(states["torch"])
            if "cuda" in states and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(states["cuda"])
        self._epoch_sums = list(checkpoint.get("train_epoch_sums", [0.0, 0.0, 0]))

    def on_train_epoch_start(self) -> None:
        self._epoch_sums = self._sums_here(0.0, 0.0, 0)

    def _sums_here(self, loss_sum: float, correct: float, count: float) -> list:
        """The epoch's sums: loss and correct as tensors on the module's device, count an int."""
        tensors = (torch.tensor(float(value), device=self.device) for value in (loss_sum, correct))
        return [*tensors, int(count)]

    def on_train_start(self) -> None:
        # Resumed inside an epoch, Lightning skips on_train_epoch_start: the restored sums go on.
        self._epoch_sums = self._sums_here(*self._epoch_sums)
        # A OneCycle schedule restored from a checkpoint keeps its own length; a longer run would
        # crash at its end, so say so now (before any step) instead.
        for config in self.trainer.lr_scheduler_configs:
            total = getattr(config.scheduler, "total_steps", None)
            if total is not None and total < self.trainer.estimated_stepping_batches:
                raise ConfigError(
                    f"The checkpoint's OneCycle schedule lasts {total} steps, but this run needs "
                    f"{int(self.trainer.estimated_stepping_batches)}.",
                    fix="Resume with the original run's trainer.max_epochs, or extend training "
                    "with scheduler=cosine, step or none.",
                )
        self._fit_started = time.perf_counter()

    def on_train_end(self) -> None:
        self.fit_seconds = time.perf_counter() - self._fit_started

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = instantiate(self.hparams.optimizer)(params=self.parameters())
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        config = dict(self.hparams.scheduler)
        interval = config.pop("interval", "epoch")
        factory = instantiate(config)
        accepts = inspect.signature(factory.func).parameters
        trainer = self.trainer
        total = trainer.estimated_stepping_batches if interval == "step" else trainer.max_epochs
        extra = {}
        if "total_steps" in accepts and "total_steps" not in factory.keywords:
            # One cycle spans at least three steps (up, down, the end); trainer.fast_dev_run (a
            # code check) gets three. (trainer.max_epochs is required: the run has a length.)
            if total < 3 and not trainer.fast_dev_run:
                raise ConfigError(
                    f"The {factory.func.__name__} schedule needs at least 3 optimiser steps, but "
                    f"this run makes {int(total)} (trainer.max_epochs x batches per epoch).",
                    fix="Train longer (more epochs, a smaller data.batch_size, a higher "
                    "trainer.limit_train_batches), or use scheduler=none for a constant "
                    "learning rate.",
                )
            total = max(total, 3)
            extra["total_steps"] = int(total)
            if "pct_start" in factory.keywords:
                # Each phase needs at least two steps, or OneCycleLR divides by zero (tiny runs).
                pct = factory.keywords["pct_start"]
                extra["pct_start"] = min(max(pct, 2 / total), (total - 1) / total)
        if "T_max" in accepts and "T_max" not in factory.keywords:
            extra["T_max"] = int(total)
        schedule = {"scheduler": factory(optimizer, **extra), "interval": interval}
        return {"optimizer": optimizer, "lr_scheduler": schedule}
