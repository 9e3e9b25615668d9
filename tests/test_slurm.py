"""lenet-cli on a real SLURM cluster: the one-node cluster of scripts/slurm_cluster.sh (slurmctld,
slurmd and munged from Debian's packages, started as root). Skipped, with the reason, where it
cannot start; CI starts it (.ci/run)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BIN, REPO, TINY, run_cli, service_env

pytestmark = pytest.mark.slurm

CLUSTER = REPO / "scripts" / "slurm_cluster.sh"
TESTS = Path(__file__).parent
QUIET = ["callbacks.progress_bar=null", "logger.images=false"]


@pytest.fixture(scope="session")
def slurm(tmp_path_factory) -> dict[str, str]:
    """The environment that reaches the cluster (started here if it is not up yet)."""
    lock = Path(tmp_path_factory.getbasetemp()).parent / "slurm-cluster.lock"
    with open(lock, "w") as held:  # pytest-xdist workers start it one at a time
        fcntl.flock(held, fcntl.LOCK_EX)
        env = service_env(CLUSTER, "local SLURM cluster")
    return {**os.environ, **env}


def _env(slurm: dict[str, str], data: Path) -> dict[str, str]:
    env = {**slurm, "LENET_DATA_DIR": str(data), "PYTHONPATH": str(TESTS), "COLUMNS": "120"}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _srun(slurm, data: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["srun", *args],
        cwd=cwd,
        env=_env(slurm, data),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "layout, given",
    [(["-n2"], None), (["-N1", "--ntasks-per-node=2"], None), (["-n2"], "mine")],
    ids=["n", "per-node", "folder-given"],
)
def test_srun_ddp_both_forms(
    slurm, tiny_data: Path, tmp_path: Path, layout: list[str], given: str | None
) -> None:
    folder = [f"hydra.run.dir={given}"] if given else []  # rank 0 claims it, the others share it
    lenet_train = str(BIN / "lenet-train")
    result = _srun(
        slurm, tiny_data, tmp_path, *layout, lenet_train, "trainer=ddp_cpu", *TINY, *QUIET, *folder
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (run,) = [tmp_path / given] if given else (tmp_path / "outputs").glob("*/*")
    assert given or (run.name.startswith("slurm-") and run.name.endswith(".0"))
    assert json.loads((run / "metrics.json").read_text())["global_batch_size"] == 2 * 50
    assert [p for p in tmp_path.rglob(".hydra")] == [run / ".hydra"]


def test_srun_with_a_task_count_that_does_not_fit_is_refused(
    slurm, tiny_data: Path, tmp_path: Path
) -> None:
    result = _srun(slurm, tiny_data, tmp_path, "-n2", str(BIN / "lenet-train"), "trainer=cpu")
    assert result.returncode != 0
    text = " ".join((result.stdout + result.stderr).split())
    assert text.count("Configuration error") == 1 and "trainer.devices=2" in text
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "outputs").exists()  # refused before any folder


BATCH_SCRIPT = """#!/bin/bash
#SBATCH --requeue
#SBATCH --output=outputs/slurm-%j.out
#SBATCH --open-mode=append
trap 'echo "SLURM warning signal"' USR1
srun {lenet_train} "$@"
"""


def _wait_for(job: str, env: dict[str, str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%T"], env=env, capture_output=True, text=True
        ).stdout.strip()
        if not state:
            return
        time.sleep(1)
    subprocess.run(["scancel", job], env=env)
    raise AssertionError(f"SLURM job {job} did not end within {timeout} s")


@pytest.mark.parametrize("event", ["warning", "requeue"])
def test_a_preempted_job_continues_in_its_folder_bit_for_bit(
    slurm, tiny_data: Path, tmp_path: Path, event: str
) -> None:
    recipe = [*TINY, *QUIET, "trainer.max_epochs=2", "trainer.deterministic=true"]
    straight = tmp_path / "straight"
    straight.mkdir()
    reference = run_cli(*recipe, cwd=straight, data=tiny_data)
    assert reference.returncode == 0, reference.stderr[-2000:]
    expected = json.loads(next(straight.glob("outputs/*/*/metrics.json")).read_text())

    cwd = tmp_path / "cluster"
    (cwd / "outputs").mkdir(parents=True)
    script = cwd / "train.sbatch"
    script.write_text(BATCH_SCRIPT.format(lenet_train=BIN / "lenet-train"))
    inject = ["+callbacks.ev._target_=injected.SlurmEventAtStep", "+callbacks.ev.step=23"]
    env = _env(slurm, tiny_data)
    job = subprocess.run(
        ["sbatch", "--parsable", str(script), *recipe, *inject, f"+callbacks.ev.event={event}"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    _wait_for(job, env)

    log = (cwd / "outputs" / f"slurm-{job}.out").read_text()
    assert "Training stopped after step 23" in log and "Continuing the stopped run" in log, log
    (run,) = (cwd / "outputs").glob("*/slurm-*")  # one folder, found again after the restart
    metrics = json.loads((run / "metrics.json").read_text())
    timings = ("fit_seconds", "train_samples_per_second")
    assert {k: v for k, v in metrics.items() if k not in timings} == {
        k: v for k, v in expected.items() if k not in timings
    }  # test loss and every other metric bit for bit
    written = {p.relative_to(cwd) for p in cwd.rglob("*") if p.is_file()}
    assert {p.parts[0] for p in written} == {"outputs", "train.sbatch"}  # nothing else, no hpc_ckpt


def _sweep(slurm, data: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "lenet-train"), "-m", *args],
        cwd=cwd,
        env=_env(slurm, data),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_cpu_sweep_runs_as_slurm_jobs(slurm, tiny_data: Path, tmp_path: Path) -> None:
    result = _sweep(
        slurm, tiny_data, tmp_path, "hydra/launcher=slurm_cpu", "trainer=cpu",
        "model.kernel_size=3,5", *TINY, *QUIET,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",ok," in row for row in rows[1:])
    for job in ("0_model.kernel_size=3", "1_model.kernel_size=5"):
        assert (sweep / job / "metrics.json").exists()


@pytest.mark.parametrize(
    ("args", "said", "fix"),
    [
        (["hydra/launcher=slurm"], "Invalid generic resource (gres) specification", "slurm_cpu"),
        (
            ["hydra/launcher=slurm_cpu", "hydra.launcher.partition=nosuch"],
            "Invalid partition name specified",
            "partitions: debug",
        ),
    ],
    ids=["no-gpus", "partition"],
)
def test_a_sweep_that_sbatch_refuses_ends_in_a_panel(
    slurm, tiny_data: Path, tmp_path: Path, args: list[str], said: str, fix: str
) -> None:
    result = _sweep(slurm, tiny_data, tmp_path, *args, "model.kernel_size=3,5")
    text = " ".join(result.stderr.split())
    assert result.returncode == 2, text[-2000:]
    assert "SLURM refused the sweep's jobs" in text and said in text and fix in text
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "outputs").exists()  # the sweep folder held nothing: removed


@pytest.mark.parametrize("event", ["warning", "requeue", "time-limit"])
def test_every_job_of_a_slurm_sweep_continues_after_preemption(
    slurm, tiny_data: Path, tmp_path: Path, event: str
) -> None:
    recipe = [*TINY, *QUIET, "trainer.max_epochs=2", "trainer.deterministic=true", "trainer=cpu"]
    expected = {}
    for kernel in (3, 5):
        straight = tmp_path / f"straight{kernel}"
        straight.mkdir()
        done = run_cli(
            *recipe, f"model.kernel_size={kernel}", cwd=straight, data=tiny_data,
            env={"OMP_NUM_THREADS": "1"},  # as a 1-CPU SLURM job computes
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        expected[kernel] = json.loads(next(straight.glob("outputs/*/*/metrics.json")).read_text())

    # Step 13, in the first epoch: the only last.ckpt a restart can find is the one the stop wrote.
    # Under 10 minutes, submitit counts any time-limit signal as the time limit (not preemption).
    inject = ["+callbacks.ev._target_=injected.SlurmEventAtStep", "+callbacks.ev.step=13"]
    result = _sweep(
        slurm, tiny_data, tmp_path, "hydra/launcher=slurm_cpu", "model.kernel_size=3,5",
        "hydra.launcher.timeout_min=10", *recipe, *inject, f"+callbacks.ev.event={event}",
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    timings = ("fit_seconds", "train_samples_per_second")
    for kernel, job in ((3, "0_model.kernel_size=3"), (5, "1_model.kernel_size=5")):
        log = (sweep / job / "train.log").read_text()  # both starts of the job, appended
        assert f"Restored all states from the checkpoint at {sweep / job}" in log, log[-2000:]
        assert "checkpoints/last.ckpt" in log
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert {k: v for k, v in metrics.items() if k not in timings} == {
            k: v for k, v in expected[kernel].items() if k not in timings
        }
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",ok," in row for row in rows[1:])
    if event == "time-limit":  # handed on: submitit's own handler requeued each job
        said = "".join(log.read_text() for log in (sweep / ".submitit").rglob("*_log.out"))
        caught = re.findall(r"- Caught signal SIGUSR2 on \S+: this job is timed-out", said)
        assert len(caught) == said.count("- Requeued job") == 2, said[-3000:]


ARRAY_SCRIPT = """#!/bin/bash
#SBATCH --array=0-1
#SBATCH --cpus-per-task=1
#SBATCH --output=outputs/slurm-%A_%a.out
{lenet_train} -m "$@"
"""


def test_a_slurm_array_of_two_workers_shares_one_optuna_study(
    slurm, tiny_data: Path, tmp_path: Path
) -> None:
    """The README's pattern: every task of an array runs the same search command on one study
    (a journal file on the file system both tasks see); together they run n_trials trials."""
    import optuna

    (tmp_path / "outputs").mkdir()
    script = tmp_path / "search.sbatch"
    script.write_text(ARRAY_SCRIPT.format(lenet_train=BIN / "lenet-train"))
    journal = tmp_path / "outputs" / "studies" / "search.journal"
    search = ["hparams_search=optuna", f"hydra.sweeper.storage={journal}", "trainer=cpu",
              "hydra.sweeper.study_name=array", "hydra.sweeper.n_trials=4", *TINY, *QUIET,
              "++trainer.limit_train_batches=4"]  # fmt: skip
    env = {**_env(slurm, tiny_data), "LENET_THREADS_PER_JOB": "1"}
    job = subprocess.run(["sbatch", "--parsable", str(script), *search], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    _wait_for(job, env)

    logs = sorted((tmp_path / "outputs").glob(f"slurm-{job}_*.out"))
    assert len(logs) == 2, logs
    folders = sorted((tmp_path / "outputs" / "multirun").glob("*/*"))
    assert len(folders) == 2, "\n".join(log.read_text()[-2000:] for log in logs)
    numbers = [
        sorted(int(p.name.split("_")[0]) for p in folder.iterdir() if (p / ".hydra").is_dir())
        for folder in folders
    ]
    assert sorted(numbers[0] + numbers[1]) == [0, 1, 2, 3]  # each trial ran once, somewhere
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    trials = optuna.load_study(study_name="array", storage=storage).get_trials()
    counted = [t for t in trials if "not_run" not in t.user_attrs]
    assert [t.state.name for t in counted] == ["COMPLETE"] * 4
    assert {t.user_attrs["sweep_folder"] for t in counted} <= {str(f) for f in folders}
