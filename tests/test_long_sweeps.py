"""Sweeps that survive and scale: a sweep interrupted and resumed in its folder, an Optuna study
on disk extended by a resumed search, two commands sharing one SQLite study, and a search whose
every trial fails. Real lenet-train commands on the tiny synthetic digits."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import optuna
import pytest
from conftest import BIN, TINY, run_cli

QUICK = [*TINY, "callbacks=none"]
INJECTED = {"PYTHONPATH": str(Path(__file__).parent)}
# The search of hparams_search=optuna, on settings that train in a second (batch size fixed).
SEARCH = ["hparams_search=optuna", *QUICK, "++trainer.limit_train_batches=4"]


def sweep_folders(cwd: Path) -> list[Path]:
    return sorted((cwd / "outputs" / "multirun").glob("*/*"))


def job_numbers(sweep: Path) -> list[int]:
    return sorted(int(p.name.split("_")[0]) for p in sweep.iterdir() if (p / ".hydra").is_dir())


def summary(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def job_folder(sweep: Path, num: int) -> Path:
    (folder,) = [p for p in sweep.iterdir() if p.name.split("_")[0] == str(num)]
    return folder


@pytest.mark.slow  # a chain of commands (sweep, stop, resume): make test-slow
def test_grid_interrupted_in_job_1_resumes_without_running_finished_jobs_again(
    tmp_path: Path, tiny_data: Path
) -> None:
    # Ctrl-C (SIGINT) after step 3 of job 1 (20 steps an epoch): the sweep stops there.
    interrupt = ["+callbacks.interrupt._target_=injected.SignalAtStep",
                 "+callbacks.interrupt.step=3", "+callbacks.interrupt.signal_name=SIGINT",
                 "+callbacks.interrupt.job=1"]  # fmt: skip
    grid = ["optimizer.lr=0.01,0.003,0.001", *QUICK, *interrupt]
    stopped = run_cli("-m", *grid, cwd=tmp_path, data=tiny_data, env=INJECTED)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    (sweep,) = sweep_folders(tmp_path)
    text = " ".join(stopped.stderr.split())
    assert f"lenet-train -m resume={sweep.relative_to(tmp_path)}" in text
    assert "Traceback" not in stopped.stderr
    assert job_numbers(sweep) == [0, 1]  # job 2 never started
    finished, interrupted = job_folder(sweep, 0), job_folder(sweep, 1)
    assert (finished / "metrics.json").exists() and not (interrupted / "metrics.json").exists()
    assert (interrupted / "checkpoints" / "last.ckpt").exists()
    result = finished / "metrics.json"
    kept = result.stat().st_mtime_ns, result.read_bytes()

    resumed = run_cli("-m", f"resume={sweep}", cwd=tmp_path, data=tiny_data, env=INJECTED)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sweep_folders(tmp_path) == [sweep]  # the same folder, no new sweep
    assert job_numbers(sweep) == [0, 1, 2]
    # Job 0 was not run again; job 1 continued from step 3; job 2 ran.
    assert (result.stat().st_mtime_ns, result.read_bytes()) == kept
    assert "finished earlier" in resumed.stdout
    shown = " ".join(resumed.stdout.split())
    assert f"Continuing the stopped run from {interrupted.relative_to(tmp_path)}" in shown
    import torch

    state = torch.load(interrupted / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 20  # the one epoch (20 steps), completed
    assert sorted(p.name for p in (interrupted / "checkpoints").iterdir()) == [
        "best.ckpt", "last.ckpt"]  # continued in place: no last-v1.ckpt  # fmt: skip
    rows = summary(sweep)
    assert sorted(int(r["job"]) for r in rows) == [0, 1, 2]
    assert {r["status"] for r in rows} == {"ok"}
    assert {r["optimizer.lr"] for r in rows} == {"0.01", "0.003", "0.001"}


@pytest.mark.slow  # several processes at once: make test-slow
def test_a_job_stopped_in_a_joblib_worker_is_recorded_and_the_sweep_goes_on(
    tmp_path: Path, tiny_data: Path
) -> None:
    # SIGTERM to job 1's worker process (as a scheduler or `kill` would send it).
    interrupt = ["+callbacks.interrupt._target_=injected.SignalAtStep",
                 "+callbacks.interrupt.step=3", "+callbacks.interrupt.job=1"]  # fmt: skip
    parallel = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    grid = ["optimizer.lr=0.01,0.003", *QUICK, *parallel, *interrupt]
    stopped = run_cli("-m", *grid, cwd=tmp_path, data=tiny_data, env=INJECTED)
    assert stopped.returncode == 1, stopped.stderr[-3000:]  # a job did not finish
    assert "Traceback" not in stopped.stderr
    (sweep,) = sweep_folders(tmp_path)
    rows = {int(r["job"]): r for r in summary(sweep)}
    assert rows[0]["status"] == "ok" and rows[1]["status"] == "interrupted"
    resumed = run_cli("-m", f"resume={sweep}", cwd=tmp_path, data=tiny_data, env=INJECTED)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("Continuing the stopped run from") == 1
    assert [r["status"] for r in summary(sweep)] == ["ok", "ok"]


@pytest.mark.slow  # a chain of commands (sweep, stop, resume): make test-slow
def test_a_search_resumed_with_more_trials_extends_its_study_on_disk(
    tmp_path: Path, tiny_data: Path
) -> None:
    env = {"LENET_THREADS_PER_JOB": "1"}
    first = run_cli("-m", *SEARCH, "hydra.sweeper.n_trials=2", cwd=tmp_path, data=tiny_data,
                    env=env)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    (sweep,) = sweep_folders(tmp_path)
    journal = sweep / "optuna.journal"
    assert journal.is_file() and job_numbers(sweep) == [0, 1]
    kept = {n: (job_folder(sweep, n) / "metrics.json").stat().st_mtime_ns for n in (0, 1)}

    more = run_cli("-m", f"resume={sweep}", "hydra.sweeper.n_trials=4", cwd=tmp_path,
                   data=tiny_data, env=env)  # fmt: skip
    assert more.returncode == 0, more.stderr[-3000:]
    assert sweep_folders(tmp_path) == [sweep] and job_numbers(sweep) == [0, 1, 2, 3]
    assert {n: (job_folder(sweep, n) / "metrics.json").stat().st_mtime_ns for n in (0, 1)} == kept
    study = optuna.load_study(
        study_name="lenet",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(journal))
        ),
    )
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    # The resumed search proposes new trials, not the first run's again (the seed moves on).
    assert trials[2].params != trials[0].params and trials[3].params != trials[1].params
    rows = summary(sweep)
    assert sorted(int(r["job"]) for r in rows) == [0, 1, 2, 3]
    for trial in trials:  # each job folder ran its trial's parameters
        row = next(r for r in rows if int(r["job"]) == trial.number)
        assert float(row["val/acc_best"]) == pytest.approx(trial.value, abs=1e-6)
        assert row["model.activation"] == trial.params["model.activation"]


@pytest.mark.slow  # a chain of commands (sweep, stop, resume): make test-slow
def test_a_trial_interrupted_in_a_search_runs_again_first_from_its_checkpoint(
    tmp_path: Path, tiny_data: Path
) -> None:
    interrupt = ["+callbacks.interrupt._target_=injected.SignalAtStep",
                 "+callbacks.interrupt.step=2", "+callbacks.interrupt.signal_name=SIGINT",
                 "+callbacks.interrupt.job=1"]  # fmt: skip
    env = {**INJECTED, "LENET_THREADS_PER_JOB": "1"}
    stopped = run_cli("-m", *SEARCH, "hydra.sweeper.n_trials=3", *interrupt, cwd=tmp_path,
                      data=tiny_data, env=env)  # fmt: skip
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    (sweep,) = sweep_folders(tmp_path)
    assert job_numbers(sweep) == [0, 1]
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep / "optuna.journal"))
    )
    before = optuna.load_study(study_name="lenet", storage=storage).get_trials()
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]
    interrupted = job_folder(sweep, 1)

    resumed = run_cli("-m", f"resume={sweep}", cwd=tmp_path, data=tiny_data, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert job_numbers(sweep) == [0, 1, 2] and job_folder(sweep, 1) == interrupted  # same params
    assert resumed.stdout.count("Continuing the stopped run from") == 1  # job 1's, long path
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep / "optuna.journal"))
    )
    after = optuna.load_study(study_name="lenet", storage=storage).get_trials()
    assert [t.state.name for t in after] == ["COMPLETE", "COMPLETE", "COMPLETE"]
    assert after[1].params == before[1].params  # the same trial, told at last
    value = json.loads((interrupted / "metrics.json").read_text())["val/acc_best"]
    assert after[1].value == pytest.approx(value)


@pytest.mark.slow  # several processes at once: make test-slow
def test_two_commands_on_one_sqlite_study_run_four_distinct_trials(
    tmp_path: Path, tiny_data: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    shared = ["-m", *SEARCH, f"hydra.sweeper.storage={storage}",
              "hydra.sweeper.study_name=shared", "hydra.sweeper.n_trials=4"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(LENET_DATA_DIR=str(tiny_data), LENET_THREADS_PER_JOB="1", COLUMNS="120")
    workers = [
        subprocess.Popen([str(BIN / "lenet-train"), *shared], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    folders = sweep_folders(tmp_path)
    assert len(folders) == 2  # each command has its own sweep folder
    numbers = [job_numbers(folder) for folder in folders]
    assert sorted(numbers[0] + numbers[1]) == [0, 1, 2, 3]  # no trial ran twice
    for folder, mine in zip(folders, numbers, strict=True):
        assert sorted(int(r["job"]) for r in summary(folder)) == mine  # its own jobs only
    study = optuna.load_study(study_name="shared", storage=storage)
    counted = [t for t in study.get_trials() if "not_run" not in t.user_attrs]
    assert len(counted) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in counted)
    assert len({tuple(sorted(t.params.items())) for t in counted}) == 4  # four different trials


def test_a_search_whose_every_trial_fails_ends_with_a_panel(
    tmp_path: Path, tiny_data: Path
) -> None:
    # A 29x29 kernel does not fit the 32x32 field twice: every trial fails at its geometry.
    impossible = ["model.kernel_size=29", "model.padding=0", "hydra.sweeper.n_trials=2"]
    result = run_cli("-m", *SEARCH, *impossible, cwd=tmp_path, data=tiny_data)
    assert result.returncode == 1
    text = " ".join(result.stderr.split())
    assert "Every job of the sweep failed (2 jobs). The first, job 0:" in text
    assert "smaller than 1x1" in text and "Traceback" not in result.stderr
    (sweep,) = sweep_folders(tmp_path)
    assert [r["status"] for r in summary(sweep)] == ["failed", "failed"]
    assert not (sweep / "optimization_results.yaml").exists()


def test_a_storage_that_cannot_open_is_refused_before_any_folder(tmp_path: Path) -> None:
    result = run_cli("-m", *SEARCH, "hydra.sweeper.storage=postgresql://nobody@localhost:1/x",
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    text = " ".join(result.stderr.split())
    assert "hydra.sweeper.storage=postgresql://nobody@localhost:1/x" in text
    assert "Traceback" not in result.stderr and not (tmp_path / "outputs").exists()


def test_resume_tells_a_sweep_folder_from_a_run_folder(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {overrides: {hydra: [], task: []}}\n")
    single = run_cli("resume=sweep", cwd=tmp_path)
    assert single.returncode == 2 and "lenet-train -m resume=sweep" in single.stderr
    not_a_sweep = run_cli("-m", "resume=.", cwd=tmp_path)
    assert not_a_sweep.returncode == 2 and "no sweep there" in not_a_sweep.stderr


def test_a_resumed_sweep_replays_its_command_with_the_given_overrides(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from lenet_cli.sweeps.resume import sweep_command

    recorded = {"hydra": {"overrides": {
        "hydra": ["hydra.sweeper.n_trials=2", "hydra.mode=MULTIRUN",
                  "hydra.job.config.override_dirname.exclude_keys=['trainer.max_epochs','model']"],
        "task": ["optimizer.lr=0.1,0.01", "trainer.max_epochs=1", "model=modern"]}}}  # fmt: skip
    OmegaConf.save(OmegaConf.create(recorded), tmp_path / "multirun.yaml")
    command = sweep_command(tmp_path, [f"resume={tmp_path}", "hydra.sweeper.n_trials=4",
                                       "model=classic", "trainer.accelerator=cpu"])  # fmt: skip
    # A key given again keeps its place (the grid's order, so the job numbers, stay the same).
    assert command == [
        "hydra.sweeper.n_trials=4", "optimizer.lr=0.1,0.01", "trainer.max_epochs=1",
        "model=classic", "trainer.accelerator=cpu", f"hydra.sweep.dir={tmp_path}",
    ]  # fmt: skip


@pytest.mark.slow  # a chain of commands (sweep, stop, resume): make test-slow
def test_a_reused_job_keeps_the_records_of_how_it_ran(tmp_path: Path, tiny_data: Path) -> None:
    grid = ["optimizer.lr=0.01,0.003", *QUICK]
    first = run_cli("-m", *grid, cwd=tmp_path, data=tiny_data)
    assert first.returncode == 0, first.stderr[-3000:]
    (sweep,) = sweep_folders(tmp_path)
    job = job_folder(sweep, 1)
    for done in (
        "metrics.json",
        "job_status.json",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
    ):
        (job / done).unlink()  # job 1 as if it had been killed before its first checkpoint
    recorded = (job_folder(sweep, 0) / ".hydra" / "overrides.yaml").read_text()
    # Resumed with one more epoch: job 0 stays as it ran (records included), job 1 runs with it.
    more = run_cli("-m", f"resume={sweep}", "trainer.max_epochs=2", cwd=tmp_path, data=tiny_data)
    assert more.returncode == 0, more.stderr[-3000:]
    assert (job_folder(sweep, 0) / ".hydra" / "overrides.yaml").read_text() == recorded
    rows = {int(r["job"]): r for r in summary(sweep)}
    assert json.loads((job_folder(sweep, 0) / "metrics.json").read_text())["epochs"] == 1
    assert json.loads((job / "metrics.json").read_text())["epochs"] == 2
    assert "trainer.max_epochs" not in rows[0] or rows[0]["trainer.max_epochs"] in ("", "1")


def test_a_failed_job_starts_again_and_an_interrupted_one_continues(tmp_path: Path) -> None:
    from lenet_cli.run_folder import RunFolder

    run = RunFolder(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"ckpt")
    status = tmp_path / "job_status.json"
    status.write_text(json.dumps({"status": "interrupted"}))
    assert run.continue_from() == last and run.state() == "stopped"
    status.write_text(json.dumps({"status": "failed"}))
    assert run.continue_from() is None and run.state() == "failed"
    status.unlink()  # killed before it could write anything
    assert run.continue_from() == last
    status.write_text(json.dumps({"status": "ok"}))
    (tmp_path / "metrics.json").write_text('{"val/acc_best": 0.9}')
    assert run.continue_from() is None and run.state() == "finished"
    assert run.metrics() == {"val/acc_best": 0.9}


def test_a_trial_whose_value_is_not_a_finite_number_is_told_failed(tmp_path: Path) -> None:
    from hydra.core.utils import JobReturn, JobStatus

    from hydra_plugins.lenet_cli_optuna.sweeper import tell_result
    from lenet_cli.run_folder import RunFolder

    study = optuna.create_study(direction="maximize")
    for value in (0.5, float("nan"), None, float("inf")):
        trial = study.ask()
        job = JobReturn(status=JobStatus.COMPLETED, _return_value=value)
        run = RunFolder(tmp_path / str(trial.number))  # a job folder without records
        assert tell_result(study, trial.number, run, job) == (value == 0.5)
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "FAIL", "FAIL", "FAIL"]


def test_storages_open_where_their_folders_do_not_exist_yet(tmp_path: Path) -> None:
    from lenet_cli.sweeps.study import absolute_storage_override, open_storage

    open_storage(f"sqlite:///{tmp_path}/studies/new/lenet.db")
    open_storage(str(tmp_path / "journals" / "lenet.journal"))
    assert (tmp_path / "studies" / "new" / "lenet.db").is_file()
    assert (tmp_path / "journals" / "lenet.journal").parent.is_dir()
    here = Path.cwd()
    assert absolute_storage_override("hydra.sweeper.storage=a/b.journal") == (
        f"hydra.sweeper.storage={here / 'a' / 'b.journal'}")  # fmt: skip
    assert absolute_storage_override("hydra.sweeper.storage=sqlite:///a.db") == (
        f"hydra.sweeper.storage=sqlite:///{here / 'a.db'}")  # fmt: skip
    url = "hydra.sweeper.storage=postgresql://u@h/db"
    assert absolute_storage_override(url) == url


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_both_samplers_build_from_the_search_config(sampler: str) -> None:
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    with initialize_config_module(config_module="lenet_cli.conf", version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=optuna",
                      f"hydra/sweeper/sampler={sampler}"], return_hydra_config=True)  # fmt: skip
    built = instantiate(cfg.hydra.sweeper.sampler)
    assert type(built).__name__ == {"tpe": "TPESampler", "random": "RandomSampler"}[sampler]


def test_an_interrupt_carried_out_of_a_worker_process_survives_pickling() -> None:
    import pickle

    from lenet_cli.errors import Interrupted, Refused

    carried = pickle.loads(pickle.dumps(Refused(Interrupted("stopped"))))
    assert carried.code == 130 and carried.error.message == "stopped"
