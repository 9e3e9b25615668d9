"""Lightning's rich progress bar, redrawn a few times a second: RichProgressBar's refresh_rate
counts batches, and at about 4 ms a step, drawing after each costs more than the eye can see."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar
from rich.progress import BarColumn

from lenet_cli.console import console

# The metrics on the bar, by their short labels, in the order they are dropped when the
# terminal is too narrow for all of them (the last one stays longest).
SHOWN_METRICS = {"train/loss_step": "loss", "val/acc": "val acc"}
# Width of everything but the bar and the metrics: "Epoch 9/9", "860/860", the two times, it/s.
FIXED_COLUMNS = 50


class ProgressBar(RichProgressBar):
    """The training bar moves at most `refresh_rate` times a second (and on an epoch's first and
    last batch); its line fits the terminal: a shorter bar and fewer metrics when it is narrow."""

    def __init__(self, refresh_rate: int = 10, leave: bool = True, **kwargs: Any) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave, **kwargs)
        self._interval = 1.0 / refresh_rate if refresh_rate > 0 else 0.0
        self._last_update = float("-inf")

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.monotonic()
        ends = batch_idx == 0 or batch_idx + 1 >= self.total_train_batches  # an epoch's first, last
        if now - self._last_update < self._interval and not ends:
            return
        self._last_update = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def _widths(self) -> tuple[int, int]:
        """The bar's width (40 characters, down to 10) and the room left for the metrics."""
        bar = max(10, min(40, console.width - FIXED_COLUMNS - 30))
        return bar, console.width - FIXED_COLUMNS - bar

    def configure_columns(self, trainer: pl.Trainer) -> list:
        columns = super().configure_columns(trainer)
        for column in columns:
            if isinstance(column, BarColumn):
                column.bar_width = self._widths()[0]
        return columns

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        values = super().get_metrics(trainer, pl_module)
        shown = {label: values[name] for name, label in SHOWN_METRICS.items() if name in values}
        room = self._widths()[1]
        while shown and sum(len(k) + 8 for k in shown) > room:
            shown.pop(next(iter(shown)))  # drop the first (loss) before val acc
        return shown
