"""The model summary at the start of a fit (with `console.verbose=true`): lenet-inspect's layer
table of `pl_module.net`. Lightning's RichModelSummary, without an example input, shows FLOPs of
zeros and lists the metric objects as layers; subclassing Lightning's ModelSummary callback keeps
Lightning from adding that default one."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelSummary as LightningModelSummary

from lenet_cli.console import console
from lenet_cli.models.describe import describe_network, layer_table


class ModelSummary(LightningModelSummary):
    """Prints the layer table once, when a fit starts (rank 0), if `enabled`."""

    def __init__(self, enabled: bool = False) -> None:
        super().__init__()
        self.enabled = enabled

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self.enabled and trainer.is_global_zero):
            return
        net, name = pl_module.net, pl_module.hparams["model"].get("name")
        title = f"model: {name} ({type(net).__name__})" if name else f"model: {type(net).__name__}"
        console.print(layer_table(describe_network(net), title, receptive_fields=False))
