"""What a finished fit leaves behind: the flat metrics of metrics.json and the HParams row of
the TensorBoard dashboard.

TensorBoard's HParams plugin reads three summaries (tensorboard/plugins/hparams/metadata.py):
the experiment (`_hparams_/experiment`: every knob with its domain, and the metrics), and per run
a session start (the knob values) and a session end. The plugin takes the experiment of the
first run that has one and ignores the others; without one it infers it from the sessions, with
free-form domains. So a single run declares its own experiment in its tensorboard folder, while
the jobs of a sweep declare none: the sweep writes one for all its jobs into its own folder
(run "." of `tensorboard --logdir <sweep folder>`), with the knobs the sweep varied first.

Column order: the plugin sorts the knobs by (not differs, name) (backend_context.py,
_sort_and_reduce_to_hparams_limit) and its table shows the first five, so `differs` is how the
knobs that matter come first. Checked against tensorboard 2.21.0.
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
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp

from lenet_cli.config import AUGMENTATIONS, CONFIG_MODULE, PRECISIONS, augmentation
from lenet_cli.models.choices import ACTIVATIONS, C3_TABLES, HEADS, POOLINGS

if TYPE_CHECKING:
    import pytorch_lightning as pl


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


# The metrics of every row: scalars each run logs itself (tag, display name).
HPARAMS_METRICS = (
    ("val/acc_best", "best val acc"),
    ("test/acc", "test acc"),
    ("test/loss", "test loss"),
)
# The knobs a single run shows first (the plugin's table shows five).
RUN_FIRST = ("model/name", "model/activation", "model/pooling", "optimizer/name", "optimizer/lr")
# Sweep overrides of a whole config group name the knob that says which option it chose.
GROUP_KNOBS = {g: f"{g}/name" for g in ("model", "data", "optimizer", "scheduler")}
# Knobs whose values are written as text whatever their YAML type, so that every run gives the
# plugin the same type (padding: 0, "same" or [2, 0]; precision: 32 or "32-true").
AS_TEXT = {"model/padding", "trainer/precision"}
# The file name ending of the experiment summary written into a sweep folder.
EXPERIMENT_SUFFIX = ".hparams"


@functools.cache
def group_targets(group: str) -> dict[str, str | None]:
    """The options of a config group (the names the HParams view offers as choices), each with
    the _target_ it builds (optimizer: adam -> torch.optim.Adam; scheduler: none -> None)."""
    folder = resources.files(CONFIG_MODULE).joinpath(group)
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
    return {
        f.name.removesuffix(".yaml"): (yaml.safe_load(f.read_text()) or {}).get("_target_")
        for f in files
    }


def _option_name(group: str, node: dict[str, Any]) -> str:
    """optimizer/name, scheduler/name: the config group option that builds the node's _target_
    (a target of no option: its class name, lower case)."""
    target = node.get("_target_")
    options = [name for name, built in group_targets(group).items() if built == target]
    if options:
        return options[0]
    return str(target).rsplit(".", 1)[-1].lower() if target else "none"


def hparams_for_tensorboard(cfg: DictConfig) -> dict[str, bool | int | float | str]:
    """The knobs worth a column in TensorBoard's HParams table, flat ("model/activation"), as
    the plugin stores them: bool, number or text (lists as text, no _target_ noise, null left
    out). Only these nodes are resolved, so a job's saved .hydra/config.yaml reads back too."""

    def resolved(key: str) -> Any:
        node = cfg[key]
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node

    optimizer, scheduler = resolved("optimizer"), resolved("scheduler") or {}
    nested: dict[str, Any] = {
        "model": resolved("model"),
        "data": {
            "name": cfg.data.name,
            "batch_size": cfg.data.batch_size,
            "augment": augmentation(cfg.data.augment),  # an old run's true reads shift_rotate
        },
        "optimizer": {"name": _option_name("optimizer", optimizer), **optimizer},
        "scheduler": {"name": _option_name("scheduler", scheduler), **scheduler},
        "trainer": {k: cfg.trainer[k] for k in ("max_epochs", "precision")},
        "seed": cfg.seed,
        "label_smoothing": cfg.label_smoothing,
    }
    knobs: dict[str, bool | int | float | str] = {}

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if not str(k).startswith("_"):
                    add(f"{prefix}/{k}" if prefix else str(k), v)
        elif value is not None:
            plain = isinstance(value, (bool, int, float, str)) and prefix not in AS_TEXT
            knobs[prefix] = value if plain else str(value)

    add("", nested)
    return knobs


def _choices(name: str) -> tuple[Any, ...]:
    """The values a knob can take, where they are known in advance."""
    known = {
        "model/activation": ACTIVATIONS,
        "model/pooling": POOLINGS,
        "model/c3_table": C3_TABLES,
        "model/head": HEADS,
        "model/name": tuple(group_targets("model")),
        "data/name": tuple(group_targets("data")),
        "data/augment": AUGMENTATIONS,
        "optimizer/name": tuple(group_targets("optimizer")),
        "scheduler/name": tuple(group_targets("scheduler")),
        "scheduler/interval": ("step", "epoch"),
        "trainer/precision": PRECISIONS,
    }
    return known.get(name, ())


def _domain(name: str, values: list[Any]) -> hp.Domain | None:
    """Choices for text and booleans (the known ones, and any other value a run used),
    the interval the runs span for numbers (none when no run has a value)."""
    if values and all(isinstance(v, bool) for v in values):
        return hp.Discrete([False, True])
    if any(isinstance(v, str) for v in values) or _choices(name):
        texts = [str(v) for v in values]
        return hp.Discrete(list(dict.fromkeys([*_choices(name), *sorted(set(texts))])))
    if not values:
        return None
    low, high = min(values), max(values)
    if all(isinstance(v, int) for v in values):
        return hp.IntInterval(int(low), int(high))
    return hp.RealInterval(float(low), float(high))


def hparams_experiment(
    runs: Sequence[dict[str, Any]], order: Sequence[str] = ()
) -> api_pb2.Experiment:
    """The HParams experiment of these runs' knobs (hparams_for_tensorboard of each): a domain
    per knob and the metrics of HPARAMS_METRICS. The knobs named in `order` come first and are
    marked as differing, as is any knob whose value differs between the runs: TensorBoard lists
    those first (each group by name) and shows five."""
    names = list(dict.fromkeys(k for run in runs for k in run))
    first = [k for k in order if k in names]
    hparam_infos = []
    for name in [*first, *(k for k in names if k not in first)]:
        values = [run[name] for run in runs if name in run]
        info = api_pb2.HParamInfo(
            name=name, differs=name in first or len({repr(v) for v in values}) > 1
        )
        domain = _domain(name, values)
        if domain is not None:
            domain.update_hparam_info(info)
        else:  # a number no run has recorded (a seed drawn at run time)
            info.type = api_pb2.DATA_TYPE_FLOAT64
        hparam_infos.append(info)
    metrics = [hp.Metric(tag, display_name=shown).as_proto() for tag, shown in HPARAMS_METRICS]
    return api_pb2.Experiment(
        hparam_infos=hparam_infos, metric_infos=metrics, time_created_secs=time.time()
    )


def _hparams_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
    """One summary the HParams plugin reads (the same shape as summary_v2.hparams_pb's)."""
    summary = summary_pb2.Summary()
    content = metadata.create_summary_metadata(data)
    summary.value.add(tag=tag, metadata=content, tensor=metadata.NULL_TENSOR)
    return summary


def experiment_summary(experiment: api_pb2.Experiment) -> summary_pb2.Summary:
    data = plugin_data_pb2.HParamsPluginData(experiment=experiment)
    return _hparams_summary(metadata.EXPERIMENT_TAG, data)


def session_summaries(
    knobs: dict[str, Any], trial_id: str | None = None, success: bool = True
) -> list[summary_pb2.Summary]:
    """A run's session start (its knob values; trial_id names its row) and session end."""
    status = api_pb2.STATUS_SUCCESS if success else api_pb2.STATUS_FAILURE
    end = plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=time.time())
    return [
        hp.hparams_pb(knobs, trial_id=trial_id),
        _hparams_summary(
            metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end)
        ),
    ]


def write_experiment(folder: Path, experiment: api_pb2.Experiment) -> Path:
    """The experiment as an event file of its own in folder (which TensorBoard shows as the run
    "." of `--logdir folder`); one written here before is replaced."""
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    folder = Path(folder)
    for old in folder.glob(f"events.out.tfevents.*{EXPERIMENT_SUFFIX}"):
        old.unlink()
    writer = EventFileWriter(str(folder), filename_suffix=EXPERIMENT_SUFFIX)
    summary = experiment_summary(experiment)
    writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=summary))
    writer.close()
    (path,) = folder.glob(f"events.out.tfevents.*{EXPERIMENT_SUFFIX}")
    return path


def knob_names(override_keys: Iterable[str]) -> list[str]:
    """The knobs that sweep override keys set: model.activation -> model/activation,
    optimizer=sgd -> optimizer/name (keys that set no knob are left out by hparams_experiment)."""
    return [GROUP_KNOBS.get(key) or key.replace(".", "/") for key in override_keys]


def write_sweep_hparams(
    folder: Path, job_folders: Iterable[Path], varied: Sequence[str] = ()
) -> Path | None:
    """The one HParams experiment of a sweep, written into the sweep folder at its end: the
    knobs of every job (read from its .hydra/config.yaml), the override keys that varied
    (lenet_cli.sweeps.summary.varying_keys) first. None when no job config could be read."""
    runs = []
    for job in job_folders:
        try:
            runs.append(
                hparams_for_tensorboard(OmegaConf.load(Path(job) / ".hydra" / "config.yaml"))
            )
        except (OSError, yaml.YAMLError, OmegaConfBaseException, ValueError, TypeError):
            continue  # a job folder without a readable config has no knobs to show
    if not runs:
        return None
    return write_experiment(Path(folder), hparams_experiment(runs, knob_names(varied)))


def _trial_id(cfg: DictConfig) -> str | None:
    """The row's name: the run folder and its parent (2026-11-22/14-03-07, or the sweep's time
    and the job folder), so that two runs with the same knobs stay two rows."""
    folder = OmegaConf.select(cfg, "paths.output_dir", default=None)
    return None if folder is None else "/".join(Path(str(folder)).parts[-2:])


def log_hparams(
    trainer: pl.Trainer,
    cfg: DictConfig,
    metrics: dict[str, Any],
    in_sweep: bool = False,
) -> None:
    """The run's row in TensorBoard's HParams dashboard, then the loggers closed. A run on its
    own declares its experiment; a sweep job (`lenet-train -m`) leaves that to the sweep
    (write_sweep_hparams)."""
    from pytorch_lightning.loggers import TensorBoardLogger

    knobs = hparams_for_tensorboard(cfg)
    # The row's metrics are the last values of these scalars; metrics.json's are logged at the
    # last step, so the row shows what metrics.json holds.
    scores = {k: metrics[k] for k, _ in HPARAMS_METRICS if k in metrics}
    summaries = session_summaries(knobs, _trial_id(cfg))
    if not in_sweep:
        summaries.insert(0, experiment_summary(hparams_experiment([knobs], RUN_FIRST)))
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_metrics(scores, step=trainer.global_step)
            for summary in summaries:
                logger.experiment.file_writer.add_summary(summary, trainer.global_step)
            logger.finalize("success")
