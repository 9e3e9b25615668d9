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

from lenet_cli.app import is_child_rank, run_app
from lenet_cli.config import plain_config, validate
from lenet_cli.console import short_path
from lenet_cli.errors import LenetError
from lenet_cli.overhead import keep_freed_memory, quiet_profiler, use_plain_cuda_check


def check_run(cfg: DictConfig) -> None:
    """Checks that need torch: devices exist and the network's geometry is possible."""
    from lenet_cli.devices import check_devices, check_multirun_strategy
    from lenet_cli.models import build_network

    check_devices(cfg.trainer)
    check_multirun_strategy(cfg)
    network = build_network(OmegaConf.to_container(cfg.model, resolve=True))
    if cfg.get("ckpt_path"):
        check_resumable(str(cfg.ckpt_path), network)


def check_resumable(path: str, network) -> None:
    """The checkpoint exists, is a lenet-cli checkpoint, and holds weights for this network."""
    from lenet_cli.checkpoints import load_checkpoint
    from lenet_cli.errors import CheckpointError

    stored = load_checkpoint(path)
    shapes = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in stored.network.state_dict().items()}
    if shapes != theirs:
        differ = sorted(k for k in shapes.keys() | theirs.keys() if shapes.get(k) != theirs.get(k))
        raise CheckpointError(
            f"ckpt_path={path} holds a {stored.name} network that does not fit this run's "
            f"model={network.__class__.__name__} (layers that differ: {', '.join(differ[:4])}).",
            fix="Resume with the model overrides of the original run, or use "
            "resume=<its run folder>, which reuses them.",
        )


def _quiet_library_chatter() -> None:
    import logging

    import pytorch_lightning  # noqa: F401  (attaches its own console handler on import)

    # Lightning's info lines (GPU available, tips) go to the run's log file, not the terminal.
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        library_logger = logging.getLogger(name)
        library_logger.handlers.clear()
        library_logger.propagate = True
    # Our loaders slice in-memory tensors: worker and sampler advice does not apply.
    for text in (
        ".*does not have many workers.*",
        ".*`IterableDataset`.*",
        ".*is not a DataLoader.*",
        ".*LeafSpec.*",
        ".*sync_dist=True.*",
    ):
        warnings.filterwarnings("ignore", message=text)


def build_trainer(cfg: DictConfig):
    from hydra.utils import instantiate

    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    # Loggers are the mappings of cfg.logger; plain values there are settings (logger.images).
    loggers = [instantiate(c) for c in cfg.logger.values() if isinstance(c, DictConfig)]
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    if str(trainer_cfg.get("precision")).startswith("bf16"):
        import torch

        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            trainer_cfg["precision"] = "16-mixed"  # pre-Ampere GPUs
    # ++trainer.profiler=simple etc. are kept; without one, a profiler that costs nothing.
    profiler = trainer_cfg.pop("profiler", None) or quiet_profiler()
    return instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False, profiler=profiler)


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


def final_metrics(
    trainer, module, fit_seconds: float, fit_metrics: dict[str, float]
) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for name, value in {**fit_metrics, **_scalars(trainer.callback_metrics)}.items():
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


def _scalars(values) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if getattr(v, "numel", lambda: 1)() == 1}


class Interrupted(LenetError):
    exit_code = 130  # the shell's code for a run stopped by Ctrl-C
    title = "Interrupted"


def resume_command(checkpoint) -> str:
    """The exact command that continues this run from the checkpoint written on interrupt."""
    from hydra.core.hydra_config import HydraConfig

    path = getattr(checkpoint, "interrupted_checkpoint", None)
    if not path:
        return "Training was interrupted before a checkpoint could be written."
    keep = [
        o for o in HydraConfig.get().overrides.task if not o.startswith(("ckpt_path=", "resume="))
    ]
    return (
        f"Training stopped after step {checkpoint._last_global_step_saved}; last.ckpt holds it.\n\n"
        f"Resume with:\n  lenet-train {' '.join([*keep, f'ckpt_path={short_path(path)}'])}"
    )


def train(cfg: DictConfig) -> float | None:
    """Fit and test one configuration; returns val/acc_best (the value sweeps optimise)."""
    validate(cfg)
    check_run(cfg)
    keep_freed_memory()
    _quiet_library_chatter()
    use_plain_cuda_check(cfg.trainer.get("strategy"))
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from lenet_cli.console import console, print_config, summary_panel
    from lenet_cli.files import write_json_atomic
    from lenet_cli.module import LeNetModule

    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.seed is not None:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data, seed=cfg.seed or 0, _recursive_=False)
    if not is_child_rank():
        datamodule.prepare_data()  # missing data fails here, before the trainer starts
    plain = plain_config(cfg)
    module = LeNetModule(
        plain["model"], plain["optimizer"], plain["scheduler"] or None, cfg.label_smoothing
    )
    trainer = build_trainer(cfg)
    module.global_batch_size = cfg.data.batch_size * trainer.world_size
    if trainer.is_global_zero:
        print_config(cfg, save_to=run_dir / "config_tree.txt")

    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    except SIGTERMException:
        raise Interrupted(resume_command(trainer.checkpoint_callback)) from None
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
                logger.log_hyperparams(
                    hparams_for_tensorboard(cfg), metrics=scores, step=trainer.global_step
                )
                logger.finalize("success")
        console.print(
            summary_panel(
                metrics, run_dir, best or (checkpoint.last_model_path if checkpoint else None)
            )
        )
    return metrics.get("val/acc_best")


def main() -> None:
    run_app(train, config_name="train", check_run=check_run)


if __name__ == "__main__":
    main()
