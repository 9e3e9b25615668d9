"""The LightningModule: one network, cross-entropy on logits, accuracy, optimiser and schedule."""

from __future__ import annotations

import inspect
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import nn
from torch.nn import functional as F
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

# Keys of the model config that are not arguments of the network class.
RUNTIME_MODEL_KEYS = ("name", "compile", "channels_last")


def build_network(model_cfg: dict[str, Any]) -> nn.Module:
    """Instantiate the network described by a `model` config (a plain dict or DictConfig)."""
    kwargs = {k: v for k, v in dict(model_cfg).items() if k not in RUNTIME_MODEL_KEYS}
    return instantiate(kwargs, _convert_="all")


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
        if model.get("channels_last"):
            self.net = self.net.to(memory_format=torch.channels_last)
        # Not registered as a submodule: the checkpoint keeps one copy of the weights under "net.".
        self.__dict__["_compiled"] = torch.compile(self.net) if model.get("compile") else self.net
        num_classes = int(model["num_classes"])
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc_best = MaxMetric()
        self.samples_seen = 0  # training images this process has stepped over (for samples/s)
        self.global_batch_size: int | None = None  # data.batch_size x processes, set by the runner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1], shape (N, C, H, W) -> logits (N, classes)."""
        if self.hparams.model.get("channels_last"):
            x = x.contiguous(memory_format=torch.channels_last)
        return self._compiled(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self(x)
        smoothing = self.hparams.label_smoothing if self.training else 0.0
        return F.cross_entropy(logits, y, label_smoothing=smoothing), logits

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, logits = self._step(batch)
        self.samples_seen += len(batch[1])
        self.train_acc(logits, batch[1])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        loss, logits = self._step(batch)
        self.val_acc(logits, batch[1])
        self.log("val/loss", loss, on_epoch=True, sync_dist=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True)

    def test_step(self, batch, batch_idx: int) -> None:
        loss, logits = self._step(batch)
        self.test_acc(logits, batch[1])
        # Weighted by batch size: the epoch mean is exact when the last batch is smaller.
        self.log("test/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(batch[1]))
        self.log("test/acc", self.test_acc, on_epoch=True)

    def on_train_start(self) -> None:
        # A OneCycle schedule restored from a checkpoint keeps its own length; a longer run would
        # crash at its end, so say so now (before any step) instead.
        for config in self.trainer.lr_scheduler_configs:
            total = getattr(config.scheduler, "total_steps", None)
            if total is not None and total < self.trainer.estimated_stepping_batches:
                from lenet_cli.errors import ConfigError

                raise ConfigError(
                    f"The checkpoint's OneCycle schedule lasts {total} steps, but this run needs "
                    f"{int(self.trainer.estimated_stepping_batches)}.",
                    fix="Resume with the trainer.max_epochs of the original run, or extend training "
                    "with scheduler=cosine, step or none.",
                )

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = instantiate(self.hparams.optimizer)(params=self.parameters())
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        config = dict(self.hparams.scheduler)
        interval = config.pop("interval", "epoch")
        factory = instantiate(config)
        accepts = inspect.signature(factory.func).parameters
        total = self.trainer.estimated_stepping_batches if interval == "step" else self.trainer.max_epochs
        extra = {}
        if "total_steps" in accepts and "total_steps" not in factory.keywords:
            extra["total_steps"] = int(total)
        if "T_max" in accepts and "T_max" not in factory.keywords:
            extra["T_max"] = int(total)
        scheduler = factory(optimizer, **extra)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
