"""The model summary at the start of a fit, shown only with `console.verbose=true`.

One row per layer of the network (`pl_module.net`): output shape, trainable parameters and
multiply-accumulates per image, from the description lenet-inspect prints
(lenet_cli/models/describe.py), so both always agree.

Why not Lightning's RichModelSummary: without an example input it shows a FLOPs column of zeros
and "Total FLOPs: 0", and it lists the metric objects (train_acc, val_loss, ...) as layers.
Subclassing Lightning's ModelSummary callback keeps Lightning from adding that default one.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelSummary as LightningModelSummary
from rich.table import Table
from torch import nn

from lenet_cli.models.describe import describe_network


def _int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def summary_table(net: nn.Module, name: str | None = None) -> Table:
    """The network's layers with their shapes, trainable parameters and MACs, and the totals."""
    described = describe_network(net)
    total = described["total"]
    title = f"model: {name} ({type(net).__name__})" if name else f"model: {type(net).__name__}"
    table = Table(title=title, title_justify="left", show_footer=True)
    table.add_column("layer", "total")
    table.add_column("kind")
    table.add_column("output shape")
    table.add_column("trainable params", _int(total["params"]), justify="right")
    table.add_column("MACs / image", _int(total["macs"]), justify="right")
    for row in described["layers"]:
        shape = "x".join(map(str, row["shape"]))
        table.add_row(row["name"], row["kind"], shape, _int(row["params"]), _int(row["macs"]))
    return table


class ModelSummary(LightningModelSummary):
    """Prints `summary_table` of `pl_module.net` once, when a fit starts (rank 0, if enabled).

    Args:
        enabled: print the summary (`${oc.select:console.verbose,false}` in the config).
    """

    def __init__(self, enabled: bool = False) -> None:
        super().__init__()
        self.enabled = enabled

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self.enabled and trainer.is_global_zero):
            return
        from lenet_cli.console import console

        net = getattr(pl_module, "net", None)
        if net is None or not hasattr(net, "trace"):  # not one of ours: no layer description
            params = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
            console.print(f"model: {type(pl_module).__name__}, {params:,} trainable params")
            return
        model = pl_module.hparams.get("model")
        console.print(summary_table(net, model.get("name") if isinstance(model, Mapping) else None))
