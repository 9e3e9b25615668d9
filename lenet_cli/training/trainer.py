"""The one Trainer factory of every command: the configured settings (any Trainer argument, e.g.
`++trainer.profiler=simple`), callbacks and loggers, atomic weights-only checkpoint files (its
CheckpointIO plugin), and Lightning's info lines in the run's log file, not on the terminal."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from lightning_fabric.plugins import CheckpointIO, TorchCheckpointIO
from lightning_fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import RichProgressBar

from lenet_cli.checkpoint_io import read_checkpoint
from lenet_cli.cluster import in_slurm_job
from lenet_cli.devices import training_precision
from lenet_cli.files import write_atomic

IGNORED_WARNINGS = (
    ".*LeafSpec.*",  # torch deprecates a pytree class that Lightning still uses
    ".*sync_dist=True.*",  # the epoch values are torchmetrics', synced across processes already
    # A login node with SLURM installed: Lightning hints at srun on every local run.
    ".*The `srun` command is available on your system but is not used.*",
    # Short runs log their per-step loss less often than every 50 steps: the epoch values
    # (train/loss, train/acc) are logged all the same.
    ".*is smaller than the logging interval.*",
)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Every checkpoint is written to a temporary file beside its target, flushed and renamed
    over it, so a reader never sees half a file; every one Lightning reads back (resume, test of
    the best model) is loaded weights-only, whatever torch's default for `weights_only` is."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        # What TorchCheckpointIO lacks: its fsspec transaction writes the temporary file in the
        # system's temp folder (moved by copying across filesystems) and never fsyncs it.
        write_atomic(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # A checkpoint is untrusted input: never unpickle code, even where asked to.
        return read_checkpoint(path, map_location=map_location)


def quiet_library_chatter() -> None:
    """Lightning's info lines (GPU available, tips) go to the run's log file, not the terminal."""
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        library_logger = logging.getLogger(name)
        library_logger.handlers.clear()  # the console handler Lightning attaches on import
        library_logger.propagate = True
    for text in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=text)


def build_trainer(
    trainer_cfg: DictConfig | dict[str, Any], callbacks: list[pl.Callback], loggers: list[Any]
) -> pl.Trainer:
    """A Trainer from the `trainer` config group plus the given callbacks and loggers."""
    if OmegaConf.is_config(trainer_cfg):  # (resolved in place: it may refer to other groups)
        trainer_cfg = OmegaConf.to_container(trainer_cfg, resolve=True)
    settings = dict(trainer_cfg)
    settings["precision"] = training_precision(
        settings.get("precision"), settings.get("accelerator", "auto")
    )
    if settings.get("deterministic"):  # true or "warn"
        # cuDNN's timed choice of algorithms varies from run to run; Lightning keeps a
        # configured benchmark=true beside deterministic=true (with a warning).
        settings["benchmark"] = False
    # A user's ++trainer.plugins=[...] are kept; a CheckpointIO of their own replaces ours.
    plugins = [instantiate(p) for p in settings.pop("plugins", None) or []]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    slurm = in_slurm_job() and SLURMEnvironment.detect()
    if slurm and not any(isinstance(p, ClusterEnvironment) for p in plugins):
        # SLURM's warning signal is lenet-cli's to handle (lenet_cli/training/interrupts.py):
        # Lightning's own requeue would write hpc_ckpt_<n>.ckpt into the working directory and
        # the requeued job would start from scratch in a new folder.
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return instantiate(settings, callbacks=callbacks, logger=loggers or False, plugins=plugins)


def configured_loggers(cfg: DictConfig) -> list[Any]:
    """The loggers of cfg.logger (its mappings; plain values there are settings: logger.images)."""
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if isinstance(c, DictConfig)]


def training_trainer(
    cfg: DictConfig, progress_bar: bool = True, extra: Sequence[pl.Callback] = ()
) -> pl.Trainer:
    """lenet-train's Trainer: every configured callback and logger (the progress bar only when
    `progress_bar`: a sweep's jobs print one line each instead), and the `extra` callbacks."""
    callbacks = [
        instantiate(c)
        for key, c in cfg.callbacks.items()
        if c is not None and (progress_bar or key != "progress_bar")
    ] + list(extra)
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    settings["enable_progress_bar"] = progress_bar and settings.get("enable_progress_bar", True)
    return build_trainer(settings, callbacks, configured_loggers(cfg))


def evaluation_trainer(cfg: DictConfig) -> pl.Trainer:
    """lenet-eval's Trainer: the configured loggers, a progress bar only, and one device: one
    process sees every prediction (the confusion matrix and mistakes need it)."""
    settings = OmegaConf.to_container(cfg.trainer, resolve=True)
    if settings.get("devices") in ("auto", -1):
        settings["devices"] = 1
    settings.update(strategy="auto", enable_model_summary=False)
    return build_trainer(settings, [RichProgressBar(leave=False)], configured_loggers(cfg))
