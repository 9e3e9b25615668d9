"""What a finished fit leaves behind: metrics.json's flat metrics and its TensorBoard HParams row.

The HParams plugin takes the first experiment (knobs, domains, metrics) it finds; each run adds its
session. A single run declares its own; a sweep writes one for all its jobs, the varied knobs
first. Checked against tensorboard 2.21.0.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

# hparams.api re-exports these names from summary_v2, but imports TensorFlow for its Keras callback.
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from lenet_cli.config import AUGMENTATIONS, CONFIG_MODULE, PRECISIONS, augmentation
from lenet_cli.models.choices import CHOICES

if TYPE_CHECKING:
    import pytorch_lightning as pl


def scalars(values: dict[str, Any]) -> dict[str, float]:
    """The one-number entries of Lightning's callback_metrics, as floats."""
    return {k: float(v) for k, v in values.items() if getattr(v, "numel", lambda: 1)() == 1}


def final_metrics(
    trainer: pl.Trainer, module, fit_seconds: float, fit_metrics: dict[str, float]
) -> dict[str, Any]:
    """metrics.json: every logged metric (epoch values, without _epoch; val/acc_best among them)
    and how long and how fast the training loop ran."""
    logged = {**fit_metrics, **scalars(trainer.callback_metrics)}
    metrics = {k.removesuffix("_epoch"): v for k, v in logged.items() if not k.endswith("_step")}
    # The training loop itself (setup, data loading and the test are in the wall time, not here);
    # a run stopped early or resumed counts what this process trained.
    fit_seconds = module.fit_seconds or fit_seconds
    metrics["fit_seconds"] = round(fit_seconds, 3)
    metrics["epochs"] = int(trainer.current_epoch)
    metrics["global_batch_size"] = trainer.datamodule.batch_size * trainer.world_size
    metrics["train_samples_per_second"] = round(
        module.samples_seen * trainer.world_size / max(fit_seconds, 1e-9), 1
    )
    return metrics


# The metrics of every row: scalars each run logs itself (tag, display name).
HPARAMS_METRICS = (
    ("val/acc_best", "best val acc"),
    ("test/acc", "test acc"),
    ("test/loss", "test loss"),
    ("pruned_epoch", "pruned after epoch"),  # a trial the search's pruner stopped
)
# The knobs a single run shows first (the plugin's table shows five).
RUN_FIRST = ("model/name", "model/activation", "model/pooling", "optimizer/name", "optimizer/lr")
# Sweep overrides of a whole config group name the knob that says which option it chose.
GROUP_KNOBS = {g: f"{g}/name" for g in ("model", "data", "optimizer", "scheduler")}
# Knobs whose values are written as text whatever their YAML type, so that every run gives the
# plugin the same type (padding: 0, "same" or [2, 0]; precision: 32 or "32-true").
AS_TEXT = {"model/padding", "trainer/precision"}
# The values a knob can take, known in advance (each config group's options are added to these).
KNOWN_CHOICES = {
    **{f"model/{key}": choices for key, choices in CHOICES.items()},
    "data/augment": AUGMENTATIONS,
    "scheduler/interval": ("step", "epoch"),
    "trainer/precision": PRECISIONS,
}


@functools.cache
def group_targets(group: str) -> dict[str, str | None]:
    """A config group's options, each with the _target_ it builds (adam -> torch.optim.Adam)."""
    folder = resources.files(CONFIG_MODULE).joinpath(group)
    return {
        f.name.removesuffix(".yaml"): (yaml.safe_load(f.read_text()) or {}).get("_target_")
        for f in sorted(folder.iterdir(), key=lambda f: f.name)
        if f.name.endswith(".yaml")
    }


def _option_name(group: str, node: dict[str, Any]) -> str:
    """The group's option that builds the node's _target_ (else the class name, lower case)."""
    target = node.get("_target_")
    options = [name for name, built in group_targets(group).items() if built == target]
    return options[0] if options else str(target).rsplit(".", 1)[-1].lower()


def hparams_for_tensorboard(cfg: DictConfig) -> dict[str, bool | int | float | str]:
    """The knobs of TensorBoard's HParams table, flat ("model/activation"): bool, number or text
    (lists as text; no _target_, no null). Only these nodes are resolved, so a job's saved
    .hydra/config.yaml reads back too."""
    model, optimizer, scheduler = (
        OmegaConf.to_container(cfg[key], resolve=True) if cfg[key] else {}
        for key in ("model", "optimizer", "scheduler")
    )
    groups: dict[str, dict[str, Any]] = {
        "model": model,
        "data": {
            "name": cfg.data.name,
            "batch_size": cfg.data.batch_size,
            "augment": augmentation(cfg.data.augment),  # an old run's true reads shift_rotate
        },
        "optimizer": {"name": _option_name("optimizer", optimizer), **optimizer},
        "scheduler": {"name": _option_name("scheduler", scheduler), **scheduler},
        "trainer": {k: cfg.trainer[k] for k in ("max_epochs", "precision")},
    }
    knobs = {f"{g}/{k}": v for g, node in groups.items() for k, v in node.items() if k[0] != "_"}
    knobs |= {"seed": cfg.seed, "label_smoothing": cfg.label_smoothing}
    return {
        k: v if isinstance(v, (bool, int, float, str)) and k not in AS_TEXT else str(v)
        for k, v in knobs.items()
        if v is not None
    }


def _domain(name: str, values: list[Any]) -> hp.Domain:
    """Choices for text and booleans (known ones and those used), the runs' interval for numbers."""
    if all(isinstance(v, bool) for v in values):
        return hp.Discrete([False, True])
    group, _, key = name.partition("/")
    known = group_targets(group) if key == "name" and group in GROUP_KNOBS else ()
    known = known or KNOWN_CHOICES.get(name, ())
    if known or any(isinstance(v, str) for v in values):
        return hp.Discrete({*known, *map(str, values)})  # Discrete sorts them
    if all(isinstance(v, int) for v in values):
        return hp.IntInterval(min(values), max(values))
    return hp.RealInterval(float(min(values)), float(max(values)))


def experiment_summary(
    runs: Sequence[dict[str, Any]], order: Sequence[str] = ()
) -> summary_pb2.Summary:
    """The HParams experiment of these runs' knobs and HPARAMS_METRICS; the knobs in `order`
    first. Those and any knob whose value differs between the runs are marked as differing."""
    names = list(dict.fromkeys(k for run in runs for k in run))
    first = [k for k in order if k in names]
    values = {k: [run[k] for run in runs if k in run] for k in dict.fromkeys([*first, *names])}
    summary = hp.hparams_config_pb(
        [hp.HParam(k, _domain(k, v)) for k, v in values.items()],
        [hp.Metric(tag, display_name=shown) for tag, shown in HPARAMS_METRICS],
        time_created_secs=time.time(),
    )
    # The plugin lists the knobs by (not differs, name) and its table shows the first five, but
    # the public HParam has no `differs` (hparams_config_pb leaves it false for every knob):
    # it is set here, on the experiment the summary carries.
    plugin = summary.value[0].metadata.plugin_data
    data = plugin_data_pb2.HParamsPluginData.FromString(plugin.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in first or len({repr(v) for v in values[info.name]}) > 1
    plugin.content = data.SerializeToString()
    return summary


def session_summaries(
    knobs: dict[str, Any], trial_id: str | None = None
) -> list[summary_pb2.Summary]:
    """A run's session start (trial_id names its row) and end (STATUS_SUCCESS): summary_v2 lacks
    the end, torch's hparams has it, but its start stores booleans as numbers and names no row."""
    from torch.utils.tensorboard.summary import hparams  # torch: not for the sweep summary

    return [hp.hparams_pb(knobs, trial_id=trial_id), hparams({}, {})[2]]


def write_events(folder: str | Path, summaries: Iterable, step: int = 0, suffix: str = "") -> None:
    """The summaries as an event file of their own in folder (TensorBoard reads them all), so
    nothing depends on a writer that Lightning has closed."""
    writer = EventFileWriter(str(folder), filename_suffix=suffix)
    for summary in summaries:
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
    writer.close()


def knob_names(override_keys: Iterable[str]) -> list[str]:
    """Sweep override keys as knobs: model.activation -> model/activation, optimizer -> its name."""
    return [GROUP_KNOBS.get(key) or key.replace(".", "/") for key in override_keys]


def write_sweep_hparams(
    folder: Path, job_folders: Iterable[Path], varied: Sequence[str] = ()
) -> Path | None:
    """The sweep's one HParams experiment (replacing an earlier one) from every job's
    .hydra/config.yaml, the override keys that varied first; None when no config was read."""
    runs = []
    for job in job_folders:
        try:
            config = OmegaConf.load(Path(job) / ".hydra" / "config.yaml")
            runs.append(hparams_for_tensorboard(config))
        except (OSError, yaml.YAMLError, OmegaConfBaseException, ValueError, TypeError):
            continue  # a job folder without a readable config has no knobs to show
    if not runs:
        return None
    suffix = ".hparams"  # the sweep's experiment file, replaced by each summary
    pattern = f"events.out.tfevents.*{suffix}"
    for old in Path(folder).glob(pattern):
        old.unlink()
    write_events(folder, [experiment_summary(runs, knob_names(varied))], suffix=suffix)
    return next(Path(folder).glob(pattern))


def log_hparams(
    trainer: pl.Trainer, cfg: DictConfig, metrics: dict[str, Any], in_sweep: bool = False
) -> None:
    """The run's HParams row in each TensorBoard logger's folder; a run on its own also declares
    the experiment, which a sweep's job leaves to the sweep (write_sweep_hparams)."""
    # Imported here: the sweep summary imports this module without needing torch or Lightning.
    from pytorch_lightning.loggers import TensorBoardLogger
    from torch.utils.tensorboard.summary import scalar

    knobs = hparams_for_tensorboard(cfg)
    # The row's metrics are the last values of these scalars; metrics.json's are logged at the
    # last step, so the row shows what metrics.json holds.
    scores = [scalar(k, metrics[k]) for k, _ in HPARAMS_METRICS if k in metrics]
    # The row name: the run folder and its parent, so two runs with the same knobs are two rows.
    trial_id = "/".join(Path(cfg.paths.output_dir).parts[-2:])
    experiment = [] if in_sweep else [experiment_summary([knobs], RUN_FIRST)]
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            summaries = [*experiment, *session_summaries(knobs, trial_id), *scores]
            write_events(logger.log_dir, summaries, trainer.global_step)
