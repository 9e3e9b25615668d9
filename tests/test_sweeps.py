"""Sweeps: job folders named by their overrides, the summary (with a failed job), the Optuna
search, and the joblib and submitit launchers, all on the tiny synthetic digits.

Each lenet-train process costs seconds of start-up, so the three whole sweeps each cover several
things at once (the failed-job grid runs on joblib)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import TINY, run_cli
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

from lenet_cli.errors import ConfigError
from lenet_cli.sweeps.launch import available_cores, job_folder_overrides, threads_per_job
from lenet_cli.sweeps.summary import KILLED, SweepSummary, read_sweep, short_names

# Tiny jobs: one short epoch, no progress bar or model summary.
QUICK = [*TINY, "callbacks=none"]
EXCLUDE = "hydra.job.config.override_dirname.exclude_keys"
OPTUNA_PARAMS = {"optimizer.lr", "data.batch_size", "model.activation", "model.pooling",
                 "model.kernel_size", "model.dropout"}  # fmt: skip


def sweep_folder(cwd: Path) -> Path:
    (folder,) = (cwd / "outputs" / "multirun").glob("*/*")
    return folder


def job_folders(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if (p / ".hydra").is_dir()), key=lambda p: p.name)


def summary_csv(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def compose_hydra(overrides: list[str]):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="lenet_cli.conf", version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


# --- whole sweeps, the way a user starts them -------------------------------------------------


@pytest.mark.slow  # joblib workers: a process each
def test_a_joblib_grid_starts_the_next_job_in_a_freed_slot(tmp_path: Path, tiny_data: Path) -> None:
    """n_jobs=2: job 0 waits until job 2 has started. Launched in batches of two, job 2 would
    start only once job 0 ended (job 0 gives up after a minute and fails)."""
    wait = ["+callbacks.wait._target_=injected.WaitForJob", "+callbacks.wait.job=0",
            "+callbacks.wait.other=2", "+callbacks.wait.limit=60"]  # fmt: skip
    parallel = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    injected = {"PYTHONPATH": str(Path(__file__).parent), "LENET_THREADS_PER_JOB": "1"}
    result = run_cli("-m", *parallel, *wait, "seed=0,1,2", *QUICK, cwd=tmp_path, data=tiny_data,
                     env=injected)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["status"] for r in summary_csv(sweep_folder(tmp_path))] == ["ok"] * 3


def test_grid_sweep_goes_on_past_a_failed_job_and_summarises_all(
    tmp_path: Path, tiny_data: Path
) -> None:
    # Two jobs at a time in joblib worker processes: failures must be isolated there too.
    parallel = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    grid = ["model=modern", "model.padding=0", "model.kernel_size=5,29,3"]
    result = run_cli("-m", *parallel, *grid, *QUICK, cwd=tmp_path, data=tiny_data)
    assert result.returncode == 1, result.stderr[-3000:]  # a job failed: the command says so
    assert "Traceback" not in result.stdout + result.stderr
    assert "job 1 failed" in result.stderr and "Impossible network geometry" in result.stderr

    sweep = sweep_folder(tmp_path)
    names = [p.name for p in job_folders(sweep)]
    assert names == ["0_model.kernel_size=5", "1_model.kernel_size=29", "2_model.kernel_size=3"]
    rows = summary_csv(sweep)
    assert [r["model.kernel_size"] for r in rows][-1] == "29"  # best first, the failed job last
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    assert "smaller than 1x1" in rows[-1]["reason"] and rows[-1]["val/acc_best"] == ""
    scores = [float(r["val/acc_best"]) for r in rows[:2]]
    assert scores == sorted(scores, reverse=True) and min(scores) > 0.1  # above chance
    assert all(float(r["test/loss"]) > 0 for r in rows[:2])
    for row in rows[:2]:  # each job's recorded training time, as its metrics.json has it
        recorded = json.loads((sweep / row["folder"] / "metrics.json").read_text())
        assert float(row["fit_seconds"]) == round(recorded["fit_seconds"], 6)
    markdown = (sweep / "summary.md").read_text()
    assert markdown.count("\n| ") == 4 and "| failed |" in markdown
    assert "sweep summary: 3 jobs, 1 failed" in result.stdout

    failed = sweep / "1_model.kernel_size=29"
    assert json.loads((failed / "job_status.json").read_text())["status"] == "failed"
    assert not (failed / "metrics.json").exists()
    for row in rows[:2]:
        job = sweep / row["folder"]
        assert json.loads((job / "metrics.json").read_text())["val/acc_best"] == pytest.approx(
            float(row["val/acc_best"]), abs=1e-6
        )
        status = json.loads((job / "job_status.json").read_text())
        assert status["torch_threads"] == max(
            1, available_cores() // 2
        )  # 2 jobs x threads <= cores
        events = EventAccumulator(str(job / "tensorboard"))
        events.Reload()
        assert {"val/acc", "test/acc"} <= set(events.Tags()["scalars"])
        assert events.PluginTagToContent("hparams")  # the HParams dashboard compares the jobs
    # `tensorboard --logdir <sweep>` names each run by its folder: the overrides that vary.
    runs = EventMultiplexer().AddRunsFromDirectory(str(sweep)).Reload().Runs()
    assert sorted(runs) == [
        ".",  # the sweep's one HParams experiment (lenet_cli/training/results.py)
        "0_model.kernel_size=5/tensorboard",
        "2_model.kernel_size=3/tensorboard",
    ]


def test_optuna_search_runs_the_trials_and_saves_the_best(tmp_path: Path, tiny_data: Path) -> None:
    searched = [o for o in QUICK if not o.startswith("data.batch_size=")]  # batch size is searched
    short = "++trainer.limit_train_batches=8"  # batches of 32 would make 32 steps
    result = run_cli("-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3", *searched, short,
                     cwd=tmp_path, data=tiny_data, env={"LENET_THREADS_PER_JOB": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_folder(tmp_path)
    jobs = job_folders(sweep)
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1", "2"]
    assert all("optimizer.lr=" in p.name and "hparams_search" not in p.name for p in jobs)
    rows = summary_csv(sweep)
    assert len(rows) == 3 and {r["status"] for r in rows} == {"ok"}
    assert OPTUNA_PARAMS <= set(rows[0])  # every searched parameter is a column
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == OPTUNA_PARAMS
    assert best["best_value"] == pytest.approx(float(rows[0]["val/acc_best"]), abs=1e-6)
    assert "Optuna best" in result.stdout
    assert json.loads((jobs[0] / "job_status.json").read_text())["torch_threads"] == 1  # the env


@pytest.mark.slow  # a process per job: make test-slow
def test_submitit_local_runs_a_sweep_to_completion(tmp_path: Path, tiny_data: Path) -> None:
    result = run_cli("-m", "hydra/launcher=submitit_local", "optimizer.lr=0.01,0.003", *QUICK,
                     cwd=tmp_path, data=tiny_data)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = sweep_folder(tmp_path)
    jobs = job_folders(sweep)
    assert len(jobs) == 2 and all((job / "metrics.json").exists() for job in jobs)
    assert (sweep / ".submitit").is_dir()  # the jobs really went through submitit
    assert [r["status"] for r in summary_csv(sweep)] == ["ok", "ok"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hparams_search=optuna"], "needs -m"),
        (["-m", "hydra/launcher=slurm", "model.kernel_size=3,5"], "sbatch"),
    ],
)
def test_sweeps_that_cannot_run_are_refused_before_any_folder(
    tmp_path: Path, args: list[str], message: str
) -> None:
    if message == "sbatch" and any(
        (Path(p) / "sbatch").exists() for p in os.environ["PATH"].split(":")
    ):
        pytest.skip("this machine has SLURM")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


# --- the pieces ---------------------------------------------------------------------------------


def test_optuna_config_searches_valid_values_with_a_seeded_sampler() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lenet_cli.config import validate

    cfg = compose_hydra(["hparams_search=optuna"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 42
    assert sweeper.storage is None and set(sweeper.params) == OPTUNA_PARAMS
    parsed = {o.key_or_group: o for o in OverridesParser.create().parse_overrides(
        [f"{k}={v}" for k, v in sweeper.params.items()])}  # fmt: skip
    assert "log" in parsed["optimizer.lr"].value().tags
    for key, override in parsed.items():
        if override.is_choice_sweep():  # every value offered must be one lenet-train accepts
            for value in override.sweep_string_iterator():
                validate(compose_hydra([f"{key}={value}"]))
        else:
            interval = override.value()
            validate(compose_hydra([f"{key}={interval.start}"]))
            validate(compose_hydra([f"{key}={interval.end * 0.999}"]))


def test_slurm_defaults_ask_for_a_gpu_and_a_time_limit(tmp_path: Path, monkeypatch) -> None:
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = compose_hydra(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert params["_target_"].endswith("SlurmLauncher")
    # Build the sbatch script the way the launcher does (submitit only needs to find srun).
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    executor = submitit.AutoExecutor(cluster="slurm", folder=tmp_path / "submitit")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    skip = {"_target_", "submitit_folder", "max_num_timeout", "name"}
    executor.update_parameters(
        **{k if k in base else f"slurm_{k}": v for k, v in params.items() if k not in skip}
    )
    script = executor._executor._make_submission_file_text("lenet-train", "0")
    for line in ("--partition=gpu", "--gpus-per-task=1", "--time=120", "--cpus-per-task=8"):
        assert f"#SBATCH {line}" in script
    assert threads_per_job(params, cores=64, env={}) == 8  # torch threads follow cpus_per_task


def test_job_folders_are_named_by_the_overrides_that_vary() -> None:
    given = ["model.activation=relu,tanh", "trainer.max_epochs=1",
             "++trainer.limit_train_batches=20", "hydra/launcher=joblib"]  # fmt: skip
    excluded = "['trainer.max_epochs','trainer.limit_train_batches']"
    assert job_folder_overrides(given, {}) == [f"{EXCLUDE}={excluded}"]
    # Optuna's searched keys vary unless the command line fixes them.
    searched = {"optimizer.lr": "interval(0.001, 0.1)", "model.pooling": "choice(max, avg)"}
    assert job_folder_overrides(["model.pooling=max"], searched) == [f"{EXCLUDE}=['model.pooling']"]
    # Paths would nest folders; nothing varying or too long a name: just the job number.
    slashed = job_folder_overrides(["data.root=/a,/b", "seed=1,2"], {})
    assert slashed == [f"{EXCLUDE}=['data.root']"]
    assert job_folder_overrides(["seed=1"], {}) == ["hydra.sweep.subdir=${hydra.job.num}"]
    many = [f"model.key_number_{i}=a_long_value_{i},b" for i in range(8)]
    assert job_folder_overrides(many, {}) == ["hydra.sweep.subdir=${hydra.job.num}"]
    assert job_folder_overrides(["seed=1,2", "hydra.sweep.subdir=x"], {}) == []  # the user's choice


def test_threads_per_job_keeps_parallel_jobs_within_the_cores() -> None:
    joblib = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}
    assert threads_per_job({**joblib, "n_jobs": 2}, cores=2, env={}) == 1
    assert threads_per_job({**joblib, "n_jobs": 4}, cores=16, env={}) == 4
    assert threads_per_job({**joblib, "n_jobs": -1}, cores=8, env={}) == 1  # one job per core
    assert (
        threads_per_job({**joblib, "n_jobs": 2}, cores=16, env={"LENET_THREADS_PER_JOB": "3"}) == 3
    )
    local = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"}
    assert threads_per_job(local, cores=8, env={}) == 1
    assert threads_per_job({**local, "cpus_per_task": 4}, cores=8, env={}) == 4
    basic = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}
    assert threads_per_job(basic, cores=8, env={}) is None  # one job at a time: torch's default
    with pytest.raises(ConfigError, match="LENET_THREADS_PER_JOB"):
        threads_per_job(basic, cores=8, env={"LENET_THREADS_PER_JOB": "two"})


def write_job(sweep: Path, num: int, overrides: list[str], metrics=None, status=None) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    # Hydra's record of the job: its number and overrides (overrides.yaml repeats the latter).
    recorded = {"hydra": {"job": {"num": num}, "overrides": {"task": overrides}}}
    (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(recorded))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if status is not None:
        (job / "job_status.json").write_text(json.dumps(status))


def test_summary_lists_killed_and_failed_jobs_after_the_good_ones(tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "sweep"
    result = {"val/acc_best": 0.9, "test/acc": 0.89, "test/loss": 0.3, "fit_seconds": 2.0}
    write_job(
        sweep, 0, ["optimizer.lr=0.1", "seed=1"], status={"status": "failed", "reason": "NaN loss"}
    )
    write_job(
        sweep, 1, ["optimizer.lr=0.01", "seed=1"], {**result, "val/acc_best": 0.8}, {"status": "ok"}
    )
    write_job(sweep, 2, ["optimizer.lr=0.001", "seed=1"])  # killed: no metrics, no status
    write_job(
        sweep, 3, ["optimizer.lr=0.0001", "seed=1"], result
    )  # no status file: its metrics say ok
    (sweep / ".submitit" / "12").mkdir(parents=True)  # launcher files are not jobs

    SweepSummary().on_multirun_end(
        config=OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    )
    rows = summary_csv(sweep)
    assert [(r["job"], r["status"]) for r in rows] == [
        ("3", "ok"),
        ("1", "ok"),
        ("0", "failed"),
        ("2", "failed"),
    ]
    assert list(rows[0])[:2] == ["job", "optimizer.lr"]  # seed is the same everywhere: no column
    assert rows[2]["reason"] == "NaN loss" and rows[3]["reason"] == KILLED
    shown = capsys.readouterr().out
    assert (
        "sweep summary: 4 jobs, 2 failed" in shown
        and "lenet-train optimizer.lr=0.0001 seed=1" in shown
    )
    assert read_sweep(sweep).jobs[0].num == 3
    assert [job.num for job in read_sweep(sweep).failed] == [0, 2]  # what sets the exit code to 1


def test_short_column_names_stay_unambiguous() -> None:
    keys = ["optimizer.lr", "model.activation", "model.weight_decay", "optimizer.weight_decay"]
    assert short_names(keys) == ["lr", "activation", "model.weight_decay", "optimizer.weight_decay"]
