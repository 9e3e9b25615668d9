"""What a finished fit leaves behind: the flat metrics of metrics.json and the HParams row of
the TensorBoard dashboard."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from lenet_cli.config import plain_config


def scalars(values: dict[str, Any]) -> dict[str, float]:
    """The one-number entries of Lightning's callback_metrics, as floats."""
    return {k: float(v) for k, v in values.items() if getattr(v, "numel", lambda: 1)() == 1}


def final_metrics(
    trainer: pl.Trainer, module, fit_seconds: float, fit_metrics: dict[str, float]
) -> dict[str, Any]:
    """metrics.json: every logged metric (epoch values, names without _epoch), the best
    validation accuracy, and how long and how fast the training loop ran."""
    metrics: dict[str, Any] = {}
    for name, value in {**fit_metrics, **scalars(trainer.callback_metrics)}.items():
        if name.endswith("_step"):
            continue
        metrics[name.removesuffix("_epoch")] = value
    if module.val_acc_best.update_called:
        metrics["val/acc_best"] = float(module.val_acc_best.compute())
    # The training loop itself (setup, data loading and the test are in the wall time, not here);
    # a run stopped early or resumed counts what this process trained.
    fit_seconds = module.fit_seconds or fit_seconds
    metrics["fit_seconds"] = round(fit_seconds, 3)
    metrics["epochs"] = int(trainer.current_epoch)
    metrics["global_batch_size"] = module.global_batch_size
    metrics["train_samples_per_second"] = round(
        module.samples_seen * trainer.world_size / max(fit_seconds, 1e-9), 1
    )
    return metrics


def hparams_for_tensorboard(cfg: DictConfig) -> dict[str, Any]:
    """The knobs worth a column in TensorBoard's HParams table (no _target_ noise)."""

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items() if not str(k).startswith("_")}
        return str(node) if isinstance(node, list) else node

    c = plain_config(cfg)
    return clean(
        {
            "model": c["model"],
            "data": {k: c["data"][k] for k in ("name", "batch_size", "augment")},
            "optimizer": c["optimizer"],
            "scheduler": c["scheduler"] or "none",
            "trainer": {k: c["trainer"][k] for k in ("max_epochs", "precision")},
            "seed": c["seed"],
            "label_smoothing": c["label_smoothing"],
        }
    )


def log_hparams(trainer: pl.Trainer, cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """The run's row in TensorBoard's HParams dashboard, then the loggers closed."""
    scores = {k: metrics[k] for k in ("val/acc_best", "test/acc") if k in metrics}
    for logger in trainer.loggers:
        if isinstance(logger, pl.loggers.TensorBoardLogger):
            logger.log_hyperparams(
                hparams_for_tensorboard(cfg), metrics=scores, step=trainer.global_step
            )
            logger.finalize("success")
