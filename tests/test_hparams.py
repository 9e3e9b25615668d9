"""TensorBoard's HParams view: the experiment a run or a sweep declares (knobs with their
domains, the metrics), read back with TensorBoard's own event reader and, for the column order,
with the plugin's own backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY, compose_train, run_cli, run_folders
from google.protobuf import json_format
from omegaconf import OmegaConf, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata

from lenet_cli.models.choices import ACTIVATIONS, POOLINGS
from lenet_cli.training.results import (
    HPARAMS_METRICS,
    RUN_FIRST,
    experiment_summary,
    hparams_for_tensorboard,
    knob_names,
    session_summaries,
    write_events,
    write_sweep_hparams,
)


def hparams_experiment(runs: list[dict], order: list[str] = ()) -> api_pb2.Experiment:
    """The experiment of experiment_summary, as TensorBoard reads it back."""
    content = experiment_summary(runs, order).value[0].metadata.plugin_data.content
    return metadata.parse_experiment_plugin_data(content)


def hparams_content(folder: Path) -> dict[str, bytes]:
    """The HParams plugin's summaries of one run folder: tag -> plugin content."""
    events = EventAccumulator(str(folder))
    events.Reload()
    return events.PluginTagToContent(metadata.PLUGIN_NAME)


def discrete(info: api_pb2.HParamInfo) -> list:
    assert info.WhichOneof("domain") == "domain_discrete", info.name
    return list(json_format.MessageToDict(info.domain_discrete))


def served_experiment(logdir: Path) -> api_pb2.Experiment:
    """The experiment as the HParams dashboard receives it (the plugin picks and sorts)."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context

    mux = plugin_event_multiplexer.EventMultiplexer().AddRunsFromDirectory(str(logdir)).Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(logdir))
    backend = backend_context.Context(
        base_plugin.TBContext(logdir=str(logdir), data_provider=provider)
    )
    request = context.RequestContext()
    return backend.experiment_from_metadata(
        request,
        "",
        True,
        backend.hparams_metadata(request, ""),
        backend.hparams_from_data_provider(request, "", None),
    )


def test_a_run_declares_its_knobs_as_choices_and_its_metrics(
    tmp_path: Path, tiny_data: Path
) -> None:
    from lenet_cli.cli.train import train

    out = tmp_path / "run"
    cfg = compose_train([f"data.root={tiny_data}", *TINY, "callbacks=none"], out)
    train(cfg)
    content = hparams_content(out / "tensorboard")
    assert {metadata.EXPERIMENT_TAG, metadata.SESSION_START_INFO_TAG} <= content.keys()
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    infos = {info.name: info for info in experiment.hparam_infos}
    assert sorted(discrete(infos["model/activation"])) == sorted(ACTIVATIONS)
    assert sorted(discrete(infos["model/pooling"])) == sorted(POOLINGS)
    assert discrete(infos["model/batch_norm"]) == [False, True]
    assert {"adam", "adamw", "sgd"} == set(discrete(infos["optimizer/name"]))
    assert "32-true" in discrete(infos["trainer/precision"])
    assert infos["optimizer/lr"].type == api_pb2.DATA_TYPE_FLOAT64
    assert [i.name for i in experiment.hparam_infos[: len(RUN_FIRST)]] == list(RUN_FIRST)
    assert all(infos[name].differs for name in RUN_FIRST)  # what TensorBoard lists first
    assert not infos["data/augment"].differs
    tags = [(m.name.tag, m.display_name) for m in experiment.metric_infos]
    assert tags == list(HPARAMS_METRICS)

    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    values = {k: json_format.MessageToDict(v) for k, v in start.hparams.items()}
    assert values == hparams_for_tensorboard(cfg)
    assert values["model/activation"] == cfg.model.activation == "scaled_tanh"
    assert values["optimizer/lr"] == pytest.approx(cfg.optimizer.lr)
    assert values["seed"] == cfg.seed and values["data/batch_size"] == 50
    assert start.group_name == f"{tmp_path.name}/run"  # its own row, named by its folder
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS
    # Every declared metric is a scalar of the run: the row has all its numbers.
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    logged = {tag for tag, _ in HPARAMS_METRICS} - {
        "pruned_epoch"
    }  # a pruned trial's: test_pruning
    assert logged <= set(events.Tags()["scalars"])


def test_a_run_without_validation_or_test_metrics_ends_well(
    tmp_path: Path, tiny_data: Path
) -> None:
    # Lightning closes its SummaryWriter when the fit ends and, with no validation or test
    # metrics, nothing reopened it: the row written through it failed (AttributeError, exit 1).
    command = ["trainer.max_epochs=1", "++trainer.limit_val_batches=0", "test=false"]
    result = run_cli(*TINY, *command, cwd=tmp_path, data=tiny_data)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    (run,) = run_folders(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and not {"val/acc_best", "test/acc"} & metrics.keys()
    content = hparams_content(run / "tensorboard")  # the run still has its HParams row
    tags = {metadata.EXPERIMENT_TAG, metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG}
    assert tags <= content.keys()


def test_order_puts_the_given_knobs_first_and_marks_them() -> None:
    runs = [
        {"data/augment": False, "model/activation": "relu", "optimizer/lr": 0.01, "seed": 1},
        {"data/augment": False, "model/activation": "tanh", "optimizer/lr": 0.01, "seed": 2},
    ]
    experiment = hparams_experiment(runs, order=["optimizer/lr", "model/activation", "nope"])
    names = [info.name for info in experiment.hparam_infos]
    assert names == ["optimizer/lr", "model/activation", "data/augment", "seed"]
    differs = {info.name: info.differs for info in experiment.hparam_infos}
    # Given first, or differing between the runs (seed): TensorBoard lists these first.
    assert differs == {
        "optimizer/lr": True,
        "model/activation": True,
        "data/augment": False,
        "seed": True,
    }
    lr, activation = experiment.hparam_infos[:2]
    assert (lr.domain_interval.min_value, lr.domain_interval.max_value) == (0.01, 0.01)
    assert "scaled_tanh" in discrete(activation)  # every choice, not only the ones used


def test_override_keys_name_their_knobs() -> None:
    assert knob_names(["model.activation", "optimizer", "data.batch_size"]) == [
        "model/activation",
        "optimizer/name",
        "data/batch_size",
    ]


def fake_sweep(root: Path) -> list[Path]:
    """Four job folders as lenet-train -m leaves them: .hydra/config.yaml and a session."""
    jobs = []
    for num, (activation, pooling) in enumerate(
        [("relu", "max"), ("relu", "avg"), ("tanh", "max"), ("tanh", "avg")]
    ):
        job = root / f"{num}_model.activation={activation},model.pooling={pooling}"
        overrides = [f"model.activation={activation}", f"model.pooling={pooling}"]
        cfg = compose_train(overrides, root / str(num))  # (a path without = or ,)
        with open_dict(cfg):
            del cfg["hydra"]
        (job / ".hydra").mkdir(parents=True)
        OmegaConf.save(cfg, job / ".hydra" / "config.yaml")
        write_events(job / "tensorboard", session_summaries(hparams_for_tensorboard(cfg), job.name))
        jobs.append(job)
    return jobs


def test_a_sweep_declares_one_experiment_with_the_varied_knobs_first(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    jobs = fake_sweep(root)
    for _ in range(2):  # a second summary of the same sweep replaces the first
        path = write_sweep_hparams(root, jobs, ["model.activation", "model.pooling"])
        assert path is not None and list(root.glob("events.out.tfevents.*")) == [path]

    experiment = metadata.parse_experiment_plugin_data(
        hparams_content(root)[metadata.EXPERIMENT_TAG]
    )
    assert [i.name for i in experiment.hparam_infos[:2]] == ["model/activation", "model/pooling"]
    assert all(metadata.EXPERIMENT_TAG not in hparams_content(j / "tensorboard") for j in jobs)

    served = served_experiment(root)  # what `tensorboard --logdir <sweep>` shows
    shown = [info.name for info in served.hparam_infos]
    assert shown[:2] == ["model/activation", "model/pooling"]
    assert [i.differs for i in served.hparam_infos[:3]] == [True, True, False]
    assert sorted(discrete(served.hparam_infos[0])) == sorted(ACTIVATIONS)
    assert [m.name.tag for m in served.metric_infos] == [tag for tag, _ in HPARAMS_METRICS]


def test_a_sweep_without_readable_job_configs_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "0_job").mkdir()
    assert write_sweep_hparams(tmp_path, [tmp_path / "0_job"], ["model.activation"]) is None
    assert not list(tmp_path.glob("events.out.tfevents.*"))
