"""`lenet-train`: compose the config, build data + model + trainer, fit, test, report.

torch and Lightning are imported inside the functions, so `lenet-train --help` and
`lenet-train --cfg job` answer without loading them.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lenet_cli.app import run_app
from lenet_cli.config import plain_config, validate


def check_run(cfg: DictConfig) -> None:
    """Checks that need torch: devices exist and the network's geometry is possible."""
    from lenet_cli.devices import check_devices
    from lenet_cli.module import build_network

    check_devices(cfg.trainer)
    build_network(OmegaConf.to_container(cfg.model, resolve=True))


def _quiet_known_warnings() -> None:
    # Our loaders slice in-memory tensors: worker and sampler advice does not apply.
    for text in (".*does not have many workers.*", ".*`IterableDataset`.*", ".*is not a DataLoader.*",
                 ".*LeafSpec.*", ".*sync_dist=True.*"):  # fmt: skip
        warnings.filterwarnings("ignore", message=text)


def build_trainer(cfg: DictConfig):
    from hydra.utils import instantiate

    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    loggers = [instantiate(c) for c in cfg.logger.values() if c is not None]
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    if str(trainer_cfg.get("precision")).startswith("bf16"):
        import torch

        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            trainer_cfg["precision"] = "16-mixed"  # pre-Ampere GPUs
    return instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False)


def hparams_for_tensorboard(cfg: DictConfig) -> dict[str, Any]:
    """The knobs worth a column in TensorBoard's HParams table (no _target_ noise)."""

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items() if not str(k).startswith("_")}
        return str(node) if isinstance(node, list) else node

    c = plain_config(cfg)
    return clean({
        "model": c["model"],
        "data": {k: c["data"][k] for k in ("name", "batch_size", "augment")},
        "optimizer": c["optimizer"],
        "scheduler": c["scheduler"] or "none",
        "trainer": {k: c["trainer"][k] for k in ("max_epochs", "precision")},
        "seed": c["seed"],
        "label_smoothing": c["label_smoothing"],
    })  # fmt: skip


def final_metrics(trainer, module, fit_seconds: float, fit_metrics: dict[str, float]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for name, value in {**fit_metrics, **_scalars(trainer.callback_metrics)}.items():
        if name.endswith("_step"):
            continue
        metrics[name.removesuffix("_epoch")] = value
    if module.val_acc_best.update_called:
        metrics["val/acc_best"] = float(module.val_acc_best.compute())
    metrics["fit_seconds"] = round(fit_seconds, 3)
    metrics["epochs"] = int(trainer.current_epoch)
    metrics["global_batch_size"] = module.global_batch_size
    metrics["train_samples_per_second"] = round(module.samples_seen * trainer.world_size / max(fit_seconds, 1e-9), 1)
    return metrics


def _scalars(values) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if getattr(v, "numel", lambda: 1)() == 1}


def train(cfg: DictConfig) -> float | None:
    """Fit and test one configuration; returns val/acc_best (the value sweeps optimise)."""
    validate(cfg)
    check_run(cfg)
    _quiet_known_warnings()
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from lenet_cli.console import print_config, summary_panel, console
    from lenet_cli.files import write_json_atomic
    from lenet_cli.module import LeNetModule

    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.seed is not None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data, seed=cfg.seed or 0, _recursive_=False)
    datamodule.prepare_data()  # missing or corrupt data fails here, before the trainer starts
    plain = plain_config(cfg)
    module = LeNetModule(plain["model"], plain["optimizer"], plain["scheduler"] or None, cfg.label_smoothing)
    trainer = build_trainer(cfg)
    module.global_batch_size = cfg.data.batch_size * trainer.world_size
    if trainer.is_global_zero:
        print_config(cfg, save_to=run_dir / "config_tree.txt")

    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    fit_seconds = time.perf_counter() - start
    fit_metrics = _scalars(trainer.callback_metrics)

    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else ""
    if cfg.test:
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
    metrics = final_metrics(trainer, module, fit_seconds, fit_metrics)
    if trainer.is_global_zero:
        write_json_atomic(run_dir / "metrics.json", metrics)
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.TensorBoardLogger):
                scores = {k: metrics[k] for k in ("val/acc_best", "test/acc") if k in metrics}
                logger.log_hyperparams(hparams_for_tensorboard(cfg), metrics=scores, step=trainer.global_step)
                logger.finalize("success")
        console.print(summary_panel(metrics, run_dir, best or (checkpoint.last_model_path if checkpoint else None)))
    return metrics.get("val/acc_best")


def main() -> None:
    run_app(train, config_name="train", check_run=check_run)


if __name__ == "__main__":
    main()
