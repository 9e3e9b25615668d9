"""Pruning (hydra/sweeper/pruner=...) and the busy slots of an Optuna search: real searches on the
tiny data, a pruner that prunes at a known epoch, and the records each pruned trial leaves."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import optuna
import pytest
from conftest import BIN, TINY, run_cli
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_slurm import _sweep, slurm  # noqa: F401 (slurm: a fixture)
from test_sweeps import job_folders, summary_csv

from lenet_cli.sweeps.study import open_storage

INJECTED = {"PYTHONPATH": str(Path(__file__).parent), "LENET_THREADS_PER_JOB": "1"}
SHORT = [*TINY, "logger.images=false", "++trainer.limit_train_batches=4", "trainer.max_epochs=3"]
# Optuna's ThresholdPruner prunes any trial whose score is below `lower` once `n_warmup_steps`
# epochs were reported: every trial stops after its second epoch, whatever it learnt.
AT_EPOCH_2 = [
    "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
    "+hydra.sweeper.pruner.lower=1.01",
    "+hydra.sweeper.pruner.n_warmup_steps=1",
]


def search(sweep: Path, trials: int, *extra: str) -> list[str]:
    return ["-m", "hparams_search=optuna", f"hydra.sweeper.n_trials={trials}",
            f"hydra.sweep.dir={sweep}", *SHORT, *extra]  # fmt: skip


def trials(storage: Path) -> list:
    return optuna.load_study(study_name="lenet", storage=open_storage(str(storage))).trials


def test_a_pruned_trial_stops_after_its_epoch_keeps_its_records_and_is_never_run_again(
    tmp_path: Path, tiny_data: Path
) -> None:
    sweep = tmp_path / "sweep"
    # max_failure_rate=0: a pruned trial is no failure, so the search still runs both.
    args = search(sweep, 2, *AT_EPOCH_2, "hydra.sweeper.max_failure_rate=0.0")
    result = run_cli(*args, cwd=tmp_path, data=tiny_data, env=INJECTED)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("pruned after epoch 2") == 2
    study = trials(sweep / "optuna.journal")
    assert [t.state.name for t in study] == ["PRUNED", "PRUNED"]
    assert [sorted(t.intermediate_values) for t in study] == [[0, 1], [0, 1]]
    for job in job_folders(sweep):
        status = json.loads((job / "job_status.json").read_text())
        assert status["status"] == "pruned" and status["reason"] == "pruned after epoch 2"
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["pruned_epoch"] == 2 and metrics["epochs"] == 2
        assert "test/acc" not in metrics  # a pruned trial is not tested
        assert (job / "checkpoints" / "last.ckpt").is_file()
        events = {str(p.parent) for p in (job / "tensorboard").rglob("events.out.tfevents.*")}
        marks = [EventAccumulator(e).Reload().Tags()["scalars"] for e in events]
        assert any("pruned_epoch" in tags for tags in marks)  # the HParams row says it
    rows = summary_csv(sweep)
    assert [r["status"] for r in rows] == ["pruned", "pruned"]
    assert {r["reason"] for r in rows} == {"pruned after epoch 2"}

    kept = {
        job: (job / "checkpoints" / "last.ckpt").stat().st_mtime_ns for job in job_folders(sweep)
    }
    again = run_cli("-m", f"resume={sweep}", cwd=tmp_path, data=tiny_data, env=INJECTED)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [t.state.name for t in trials(sweep / "optuna.journal")] == ["PRUNED", "PRUNED"]
    assert {j: (j / "checkpoints" / "last.ckpt").stat().st_mtime_ns for j in kept} == kept


def test_a_pruner_needs_an_optuna_search_and_good_settings(tmp_path: Path) -> None:
    grid = run_cli("-m", "hydra/sweeper/pruner=median", "model.activation=relu,tanh", cwd=tmp_path)
    assert grid.returncode == 2 and "stops the hopeless trials of an Optuna search" in grid.stderr
    bad = run_cli(*search(tmp_path / "s", 2, "hydra/sweeper/pruner=median",
                          "hydra.sweeper.pruner.n_startup_trials=-1"), cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2 and "hydra.sweeper.pruner" in bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr
    assert not (tmp_path / "s").exists() and not (tmp_path / "outputs").exists()


@pytest.mark.slow  # joblib workers: a process each
def test_joblib_slots_start_the_next_trial_while_a_long_one_runs_and_prune(
    tmp_path: Path, tiny_data: Path
) -> None:
    """n_jobs=2: trial 0 waits until trial 2 has started. With batches of two, trial 2 would
    start only once trial 0 ended (the job would give up and fail); with a freed slot it starts
    as soon as trial 1 ends."""
    sweep = tmp_path / "sweep"
    wait = ["+callbacks.wait._target_=injected.WaitForJob", "+callbacks.wait.job=0",
            "+callbacks.wait.other=2"]  # fmt: skip
    slots = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"]
    result = run_cli(*search(sweep, 4, *AT_EPOCH_2, *slots, *wait), cwd=tmp_path, data=tiny_data,
                     env=INJECTED)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert [t.state.name for t in trials(sweep / "optuna.journal")] == ["PRUNED"] * 4
    assert [r["status"] for r in summary_csv(sweep)] == ["pruned"] * 4


@pytest.mark.slow  # two commands at once
def test_two_workers_on_one_study_prune_and_share_its_trials(
    tmp_path: Path, tiny_data: Path
) -> None:
    journal = tmp_path / "study.journal"
    env = {"LENET_DATA_DIR": str(tiny_data), "COLUMNS": "120", **INJECTED}
    workers = [
        subprocess.Popen(
            [
                str(BIN / "lenet-train"),
                *search(tmp_path / name, 4, *AT_EPOCH_2),
                f"hydra.sweeper.storage={journal}",
            ],
            cwd=tmp_path,
            env={**__import__("os").environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for name in ("a", "b")
    ]
    outputs = [worker.communicate(timeout=600) for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in outputs]
    study = trials(journal)
    assert len(study) == 4 and {t.state.name for t in study} == {"PRUNED"}
    folders = {t.user_attrs["sweep_folder"] for t in study}
    assert folders == {str((tmp_path / "a").resolve()), str((tmp_path / "b").resolve())}


@pytest.mark.slurm
def test_slurm_trials_report_to_the_study_and_are_pruned(
    slurm,  # noqa: F811 (the fixture of test_slurm.py)
    tiny_data: Path,
    tmp_path: Path,
) -> None:
    """Each trial is a SLURM job (two at a time) that opens the study in the sweep folder."""
    sweep = tmp_path / "sweep"
    args = search(sweep, 3, *AT_EPOCH_2, "hydra/launcher=slurm_cpu", "hydra.sweeper.n_jobs=2")
    result = _sweep(slurm, tiny_data, tmp_path, *args[1:], "callbacks.progress_bar=null")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert [t.state.name for t in trials(sweep / "optuna.journal")] == ["PRUNED"] * 3
    assert [r["status"] for r in summary_csv(sweep)] == ["pruned"] * 3


@pytest.mark.slow  # a DDP run of two processes
def test_a_ddp_trial_stops_on_every_rank_at_the_pruned_epoch(
    tmp_path: Path, tiny_data: Path
) -> None:
    """Rank 0 asks the study, every rank stops after the same epoch: the run ends (a rank that
    went on alone would wait for the other forever) with the records of a pruned trial."""
    sweep = tmp_path / "sweep"
    args = search(sweep, 1, *AT_EPOCH_2, "trainer=ddp_cpu", "trainer.devices=2")
    result = run_cli(*args, cwd=tmp_path, data=tiny_data, env=INJECTED, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [t.state.name for t in trials(sweep / "optuna.journal")] == ["PRUNED"]
    (job,) = job_folders(sweep)
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["pruned_epoch"] == 2 and metrics["epochs"] == 2
    assert metrics["global_batch_size"] == 2 * 50  # two processes trained it


@pytest.mark.slow  # joblib workers
def test_a_trial_stopped_from_outside_stays_running_and_a_resume_finishes_it(
    tmp_path: Path, tiny_data: Path
) -> None:
    """SIGTERM to the worker of trial 1 (what a scheduler or Ctrl-C does): the trial keeps its
    place in the study (RUNNING, not failed), and `-m resume=` continues it in its folder."""
    sweep = tmp_path / "sweep"
    stop = ["+callbacks.stop._target_=injected.SignalAtStep", "+callbacks.stop.step=2",
            "+callbacks.stop.job=1"]  # fmt: skip
    slots = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"]
    first = run_cli(*search(sweep, 3, *slots, *stop), cwd=tmp_path, data=tiny_data, env=INJECTED)
    assert [t.state.name for t in trials(sweep / "optuna.journal")] == [
        "COMPLETE",
        "RUNNING",
        "COMPLETE",
    ], first.stderr[-3000:]
    again = run_cli("-m", f"resume={sweep}", cwd=tmp_path, data=tiny_data, env=INJECTED)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [t.state.name for t in trials(sweep / "optuna.journal")] == ["COMPLETE"] * 3
    log = (job_folders(sweep)[1] / "train.log").read_text()  # both starts of trial 1
    assert "Restored all states from the checkpoint" in log
