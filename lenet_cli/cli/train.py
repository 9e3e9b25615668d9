"""`lenet-train`: compose the config, build data + model + trainer, fit, test, report. torch and
Lightning are imported inside functions: `--help` and `--cfg job` answer without loading them."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lenet_cli.cli.app import external_launch, is_child_rank, run_app
from lenet_cli.cluster import job_being_requeued, restart_count
from lenet_cli.config import plain_config, validate
from lenet_cli.console import as_text, console, print_config, short_path, summary_panel
from lenet_cli.devices import check_devices
from lenet_cli.errors import Interrupted
from lenet_cli.files import write_json_atomic
from lenet_cli.models import build_network
from lenet_cli.run_folder import RunFolder
from lenet_cli.sweeps.ddp_job import sweep_job

log = logging.getLogger(__name__)


def check_run(cfg: DictConfig) -> None:
    """Checks that need torch: devices exist and the network's geometry is possible."""
    from lenet_cli.checkpoint_io import check_resumable  # torch

    check_devices(cfg.trainer, cfg.get("optimizer"))
    network = build_network(OmegaConf.to_container(cfg.model, resolve=True))
    if cfg.get("ckpt_path"):
        check_resumable(str(cfg.ckpt_path), network)


def resume_command(checkpoint, seed: int) -> str:
    """The exact command that continues this run from the checkpoint written on interrupt."""
    path = getattr(checkpoint, "interrupted_checkpoint", None)
    if not path:
        return "Training was interrupted before a checkpoint could be written."
    skip = ("ckpt_path=", "resume=", "seed=")
    keep = [o for o in HydraConfig.get().overrides.task if not o.startswith(skip)]
    keep.append(f"seed={seed}")  # a drawn seed (seed=null) is written out: the resume continues it
    return (
        f"Training stopped after step {checkpoint.interrupted_step}; last.ckpt holds it.\n\n"
        f"Resume with:\n  lenet-train {' '.join([*keep, f'ckpt_path={short_path(path)}'])}"
    )


def continue_unfinished(cfg: DictConfig, in_sweep: bool) -> bool:
    """Continue a stopped run from its last.ckpt in its folder (a restarted SLURM job's, found by
    its id and command; a resumed sweep's job). Returns whether it does (then check the ckpt)."""
    if cfg.get("ckpt_path") or not (restart_count() > 0 or in_sweep):
        return False
    last = RunFolder(cfg.paths.output_dir).continue_from()
    if last is not None:
        cfg.ckpt_path = str(last)
        if not is_child_rank():
            console.print(f"Continuing the stopped run from {short_path(last)}.")
    return last is not None


def train(cfg: DictConfig, checked: tuple | None = None) -> float | None:
    """Fit and test one configuration; returns val/acc_best (the value sweeps optimise).
    `checked`: check_run's result when this command's pre-check checked this very config."""
    # One job of a sweep (`-m`), in the sweep's process or as a run of its own (a DDP job).
    in_sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    in_sweep = in_sweep or sweep_job() is not None
    if checked is None:  # a sweep's job, or a call from Python
        validate(cfg)
    if continue_unfinished(cfg, in_sweep) or checked is None:
        check_run(cfg)
    from lenet_cli.sweeps.pruning import trial_pruning
    from lenet_cli.training.card import run_card
    from lenet_cli.training.results import final_metrics, log_hparams
    from lenet_cli.training.trainer import quiet_library_chatter, training_trainer

    quiet_library_chatter()
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    datamodule, module = build(cfg)
    # In a sweep each job is one line of the sweep's output (lenet_cli/sweeps/summary.py).
    verbose = bool(OmegaConf.select(cfg, "console.verbose"))
    shown = verbose or not in_sweep
    pruning = trial_pruning()  # a trial of an Optuna search with a pruner
    trainer = training_trainer(cfg, progress_bar=shown, extra=[pruning] if pruning else [])
    if trainer.is_global_zero:
        print_config(cfg, save_to=run_dir / "config_tree.txt", show=verbose)
        card = run_card(cfg, trainer, module.net, datamodule.planned_sizes())
        log.info("\n%s", as_text(card))  # the run's log file has it, in a sweep too
        if shown:
            console.print(card)
    fit_seconds, fit_metrics = fit(cfg, trainer, module, datamodule)
    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint is not None else ""
    pruned = pruning.pruned_epoch if pruning else None
    if cfg.test and not pruned:  # a pruned trial is not worth its test
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
    metrics = final_metrics(trainer, module, fit_seconds, fit_metrics)
    metrics["seed"] = int(cfg.seed)
    if pruned:
        metrics["pruned_epoch"] = pruned
    if trainer.is_global_zero:
        write_json_atomic(run_dir / "metrics.json", metrics)
        log_hparams(trainer, cfg, metrics, in_sweep=in_sweep)
        last = checkpoint.last_model_path if checkpoint else None
        summary = summary_panel(metrics, run_dir, best or last)
        log.info("\n%s", as_text(summary))
        if shown:
            console.print(summary)
    return metrics.get("val/acc_best")


def build(cfg: DictConfig):
    """The run's seed (cfg.seed holds it from here on), its DataModule and its LightningModule.
    seed=null takes the checkpoint's when resuming, else draws one, the same in every process: they
    cannot talk before torch.distributed is up, so those Lightning starts inherit the parent's
    (PL_GLOBAL_SEED) and those srun or torchrun start derive it from the launcher's id for the run,
    which is new for every launch."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from lenet_cli.checkpoint_io import checkpoint_seed
    from lenet_cli.training.module import LeNetModule

    seed = cfg.seed
    if seed is None and cfg.get("ckpt_path"):
        seed = checkpoint_seed(cfg.ckpt_path)
    if seed is None and not (is_child_rank() and os.environ.get("PL_GLOBAL_SEED", "").isdigit()):
        shared = external_launch()
        drawn = hashlib.sha256(shared.encode()).digest() if shared else secrets.token_bytes(4)
        seed = int.from_bytes(drawn[:4], "big") % 2**31  # fits every generator Lightning seeds
    # seed=None: seed_everything takes the parent's seed from PL_GLOBAL_SEED.
    cfg.seed = pl.seed_everything(seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data, seed=cfg.seed, _recursive_=False)
    if not is_child_rank():
        datamodule.prepare_data()  # missing data fails here, before the trainer starts
    plain = plain_config(cfg)
    module = LeNetModule(
        plain["model"], plain["optimizer"], plain["scheduler"] or None, cfg.label_smoothing
    )
    return datamodule, module


def fit(cfg: DictConfig, trainer, module, datamodule) -> tuple[float, dict[str, float]]:
    """trainer.fit; an interrupt becomes the Interrupted panel with the command that resumes.
    Returns the seconds it took and the metrics at its end."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from lenet_cli.training import interrupts
    from lenet_cli.training.results import scalars

    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    except SIGTERMException:
        message = resume_command(trainer.checkpoint_callback, cfg.seed)
        requeued, said = interrupts.requeue_if_asked() if trainer.is_global_zero else (False, None)
        if said:
            message = f"{said}\n\n{message}"
        stopped = Interrupted(message)
        # The job starts again and continues from last.ckpt (a sweep job then leaves no result).
        stopped.restarting = requeued or job_being_requeued()
        raise stopped from None
    finally:
        # Lightning calls Callback.teardown only after a fit that succeeded: the signals go back
        # to their handlers here, whatever happened (a sweep's next job, the test, the exit).
        interrupts.disarm()
    return time.perf_counter() - start, scalars(trainer.callback_metrics)


def main() -> None:
    run_app(train, config_name="train", check_run=check_run, tune_process=True)


if __name__ == "__main__":
    main()
