"""`lenet-eval ckpt_path=PATH`: test a checkpoint and report how and where it goes wrong, in a run
folder of its own. The network comes from the checkpoint's stored config; data, trainer, logger
and paths from conf/eval.yaml."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from lenet_cli.cli.app import run_app
from lenet_cli.config import validate
from lenet_cli.errors import ConfigError

if TYPE_CHECKING:  # torch loads only once a command runs: --help stays instant
    from lenet_cli.checkpoint_io import Checkpoint


def check_run(cfg: DictConfig) -> Checkpoint:
    """The checkpoint loads and fits the data; the devices exist. Runs before any folder is made."""
    from lenet_cli.checkpoint_io import load_checkpoint
    from lenet_cli.devices import check_devices

    if not cfg.get("ckpt_path"):
        raise ConfigError(
            "lenet-eval needs the checkpoint to test.",
            fix="Add ckpt_path=outputs/<date>/<time>/checkpoints/best.ckpt (from lenet-train).",
        )
    devices = cfg.trainer.get("devices", "auto")
    count = len(devices) if OmegaConf.is_list(devices) else devices
    if isinstance(count, int) and count > 1 or cfg.trainer.get("num_nodes", 1) != 1:
        raise ConfigError(
            f"lenet-eval runs on one device (trainer.devices={devices}).",
            fix="Leave trainer.devices=auto, or choose one device, e.g. trainer.devices=1.",
        )
    check_devices(cfg.trainer)
    checkpoint = load_checkpoint(cfg.ckpt_path)
    wanted = (int(cfg.data.channels), int(cfg.data.image_size), int(cfg.data.image_size))
    if checkpoint.input_shape != wanted or checkpoint.num_classes != int(cfg.data.num_classes):
        raise ConfigError(
            f"The checkpoint's network takes {'x'.join(map(str, checkpoint.input_shape))} images "
            f"and {checkpoint.num_classes} classes, but data={cfg.data.name} has "
            f"{'x'.join(map(str, wanted))} images and {cfg.data.num_classes} classes.",
            fix="Choose the data set the checkpoint was trained on, e.g. data=mnist.",
        )
    return checkpoint


def evaluate(cfg: DictConfig, checked: tuple | None = None) -> float:
    """Test the checkpoint on the configured data's test split; returns the test accuracy.
    `checked`: (check_run's result,) when this command's pre-check checked this very config."""
    if checked is None:
        validate(cfg)
    checkpoint = checked[0] if checked is not None else check_run(cfg)
    from hydra.utils import instantiate

    from lenet_cli.console import console
    from lenet_cli.evaluation import report
    from lenet_cli.files import write_json_atomic
    from lenet_cli.training.module import LeNetModule
    from lenet_cli.training.trainer import evaluation_trainer, quiet_library_chatter

    quiet_library_chatter()

    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # val_size=0: the validation split is not used, and the test split does not depend on it.
    datamodule = instantiate(cfg.data, val_size=0, _recursive_=False)
    datamodule.prepare_data()  # missing or corrupt data fails here, with the data error panel
    trainer = evaluation_trainer(cfg)
    # lenet-train's own module and test, with the checkpoint's (checked) weights; not compiled:
    # the test set is seen once.
    hparams = checkpoint.hyper_parameters
    model = {**checkpoint.model_cfg, "compile": False}
    module = LeNetModule(model, hparams["optimizer"], hparams.get("scheduler"))
    module.net.load_state_dict(checkpoint.network.state_dict())
    module.mistakes_kept = int(cfg.mistakes)
    start = time.perf_counter()
    trainer.test(module, datamodule=datamodule, verbose=False)
    seconds = time.perf_counter() - start
    outcome = module.test_outcome

    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics["test/samples"] = samples = int(outcome["confusion"].sum())
    metrics["eval_seconds"] = round(seconds, 3)
    metrics["test_samples_per_second"] = round(samples / max(seconds, 1e-9), 1)
    write_json_atomic(run_dir / "metrics.json", metrics)
    saved = report.save_pictures(cfg, outcome, run_dir, trainer.loggers)
    for logger in trainer.loggers:
        logger.finalize("success")  # the pictures were drawn after the test closed the files

    console.print(report.per_class_table(outcome, report.class_labels(cfg, checkpoint.num_classes)))
    console.print(report.eval_summary(metrics, checkpoint, run_dir, saved))
    return metrics["test/acc"]


def main() -> None:
    run_app(evaluate, config_name="eval", check_run=check_run, tune_process=True)


if __name__ == "__main__":
    main()
