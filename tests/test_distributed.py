"""Two-process DDP on CPU (gloo) under Hydra: one run folder, metrics over the whole test set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_cli, run_folders
from omegaconf import DictConfig, OmegaConf

from lenet_cli.models import build_network
from lenet_cli.training.mnist_files import ensure_files, load_split

pytestmark = pytest.mark.slow  # every test starts several processes (DDP, torchrun): make test-slow


def test_ddp_cpu_leaves_one_run_folder_and_exact_test_accuracy(
    tmp_path: Path, tiny_data: Path
) -> None:
    # 400 test images on 2 ranks in batches of 150: unequal last batches, nothing padded.
    result = run_cli(
        "trainer=ddp_cpu",
        *TINY,
        "data.eval_batch_size=150",
        "callbacks.progress_bar=null",
        cwd=tmp_path,
        data=tiny_data,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_folders(tmp_path)
    assert [p for p in tmp_path.rglob(".hydra")] == [run / ".hydra"]  # no stray child folders
    assert [p.name for p in run.glob("*.log")] == ["train.log"]
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    config = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert "DDPStrategy" in config.trainer.strategy._target_ and config.trainer.devices == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_batch_size"] == 2 * 50

    # The checkpoint evaluated in one process on the same test set gives the same accuracy.
    checkpoint = torch.load(
        run / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu"
    )
    net = build_network(checkpoint["hyper_parameters"]["model"]).eval()
    net.load_state_dict(
        {k[4:]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    )
    images, labels = load_split(ensure_files(tiny_data, "MNIST", download=False), "test", 10)
    with torch.no_grad():
        predictions = net(images.float() / 255).argmax(1)
    single = (predictions == labels).float().mean().item()
    assert abs(single - metrics["test/acc"]) < 1e-6


def test_torchrun_processes_share_one_run_folder(tmp_path: Path, tiny_data: Path) -> None:
    import os
    import subprocess
    import sys

    torchrun = Path(sys.executable).parent / "torchrun"
    lenet_train = Path(sys.executable).parent / "lenet-train"
    env = {**os.environ, "LENET_DATA_DIR": str(tiny_data)}
    command = [
        str(torchrun),
        "--standalone",
        "--nproc-per-node=2",
        str(lenet_train),
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        *TINY,
        "callbacks.progress_bar=null",
        "logger.images=false",
    ]
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    assert run.name.startswith("torchrun-")
    assert [p for p in tmp_path.rglob(".hydra")] == [run / ".hydra"]
    assert (run / "metrics.json").exists() and [p.name for p in run.glob("*.log")] == ["train.log"]


# Every process of a DDP run stops together: a diverged loss or an interrupt ends all of them at
# the same step, with one panel (rank 0's) and intact checkpoints. Before, a NaN seen by one rank
# left the other waiting in the next all-reduce, and Ctrl-C or SIGTERM hung both processes.
DDP_TINY = ["trainer=ddp_cpu", *TINY, "callbacks.progress_bar=null", "logger.images=false"]


def _ddp(tmp_path: Path, data: Path, *overrides: str, timeout: float = 180, multirun=False):
    import os
    import subprocess
    import sys

    tests = str(Path(__file__).parent)
    env = {**os.environ, "LENET_DATA_DIR": str(data), "PYTHONPATH": tests, "COLUMNS": "120"}
    env.pop("HYDRA_FULL_ERROR", None)
    # A session of its own: the injected Ctrl-C goes to this run's processes only.
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "lenet-train"),
            *(["-m"] if multirun else []),
            *DDP_TINY,
            *overrides,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )


@pytest.mark.parametrize(
    "cause",
    [
        ["model=modern", "optimizer.lr=1e30"],  # both processes diverge
        ["+callbacks.poison._target_=injected.PoisonBatch", "+callbacks.poison.step=3"],  # rank 1
    ],
    ids=["both-ranks", "one-rank"],
)
def test_ddp_divergence_stops_every_process_with_one_panel(
    tmp_path: Path, tiny_data: Path, cause: list[str]
) -> None:
    result = _ddp(tmp_path, tiny_data, *cause, "trainer.max_epochs=2")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert output.count("Training failed") == 1 and "Traceback" not in output
    assert "The training loss became" in output
    (run,) = run_folders(tmp_path)
    assert not (run / "metrics.json").exists()


def test_ddp_ctrl_c_stops_both_processes_and_resumes(tmp_path: Path, tiny_data: Path) -> None:
    interrupt = ["+callbacks.sig._target_=injected.GroupSignalAtStep", "+callbacks.sig.step=13"]
    result = _ddp(tmp_path, tiny_data, "trainer.max_epochs=2", *interrupt)
    output = result.stdout + result.stderr
    assert result.returncode == 130, output[-3000:]
    assert output.count("Interrupted") == 1 and "Traceback" not in output
    assert "Training stopped after step 13" in output
    (run,) = run_folders(tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 13 and state["epoch"] == 1  # 10 steps an epoch per rank
    assert state["LeNetDataModule"]["train_batches"]["batches_done"] == 3

    resumed = _ddp(tmp_path, tiny_data, "trainer.max_epochs=2", f"resume={run}")
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    (new,) = [r for r in run_folders(tmp_path) if r != run]
    assert json.loads((new / "metrics.json").read_text())["epochs"] == 2
    final = torch.load(new / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 20


def test_two_torchrun_nodes_on_this_machine_share_one_run(tmp_path: Path, tiny_data: Path) -> None:
    # "Several nodes with torchrun" as far as one machine allows: two agents (--nnodes=2, one
    # process each) meeting at a c10d rendezvous on 127.0.0.1, as two machines would.
    import os
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "LENET_DATA_DIR": str(tiny_data), "OMP_NUM_THREADS": "1"}
    node = [
        str(bin_dir / "torchrun"), "--nnodes=2", "--nproc-per-node=1", "--rdzv-id=twonodes",
        "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:29561", str(bin_dir / "lenet-train"),
        "trainer.accelerator=cpu", "trainer.strategy=ddp", "trainer.devices=1",
        "trainer.num_nodes=2", *TINY, "callbacks.progress_bar=null", "logger.images=false",
    ]  # fmt: skip
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    agents = [subprocess.Popen(node, cwd=tmp_path, env=env, **pipes) for _ in range(2)]
    outputs = [agent.communicate(timeout=300)[0] for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    (run,) = (tmp_path / "outputs").glob("*/*")
    assert run.name == "torchrun-twonodes"
    assert json.loads((run / "metrics.json").read_text())["global_batch_size"] == 2 * 50
    assert [p for p in tmp_path.rglob(".hydra")] == [run / ".hydra"]


# DDP jobs of a local sweep: each job runs as a lenet-train run of its own in its job folder
# (lenet_cli/sweeps/ddp_job.py), since Lightning starts the other ranks by running the command
# again, which inside a multirun is the whole sweep. Before, each such job failed with "DDP jobs
# inside a multirun are supported on SLURM only".
def _sweep(cwd: Path) -> tuple[Path, list[Path]]:
    (sweep,) = (cwd / "outputs" / "multirun").glob("*/*")
    return sweep, sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())


def _summary(sweep: Path) -> list[dict[str, str]]:
    import csv

    with open(sweep / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_ddp_jobs_of_a_sweep_each_run_in_their_own_folder(tmp_path: Path, tiny_data: Path) -> None:
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    result = _ddp(tmp_path, tiny_data, "model.activation=relu,tanh", multirun=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Traceback" not in output and "SLURM only" not in output
    sweep, jobs = _sweep(tmp_path)
    assert [job.name for job in jobs] == ["0_model.activation=relu", "1_model.activation=tanh"]
    assert run_folders(tmp_path) == []  # no run folder of its own outside the sweep
    assert sorted(tmp_path.rglob(".hydra")) == [job / ".hydra" for job in jobs]
    for job, activation in zip(jobs, ["relu", "tanh"], strict=True):
        # The sweep's records of the job, as its launcher wrote them (the run adds none).
        recorded = OmegaConf.load(job / ".hydra" / "overrides.yaml")
        assert f"model.activation={activation}" in recorded and "trainer=ddp_cpu" in recorded
        assert OmegaConf.load(job / ".hydra" / "hydra.yaml").hydra.mode == "MULTIRUN"
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["epochs"] == 1 and metrics["global_batch_size"] == 2 * 50  # 2 processes
        assert [p.name for p in job.rglob("metrics.json")] == ["metrics.json"]
        assert [p.name for p in job.rglob("*.log")] == ["train.log"]
        events = list((job / "tensorboard").glob("events.out.tfevents.*"))
        assert events and len({p.name.split(".")[-2] for p in events}) == 1  # one process's
        assert json.loads((job / "job_status.json").read_text())["status"] == "ok"
        assert not (job / ".claims").exists()  # released once the job's run ended
    rows = sorted((r["model.activation"], r["status"]) for r in _summary(sweep))
    assert rows == [("relu", "ok"), ("tanh", "ok")]
    runs = EventMultiplexer().AddRunsFromDirectory(str(sweep)).Reload().Runs()
    assert sorted(runs) == [".", *(f"{job.name}/tensorboard" for job in jobs)]


def test_a_failed_ddp_job_of_a_sweep_shows_its_own_panel_once(
    tmp_path: Path, tiny_data: Path
) -> None:
    impossible = ["model=modern", "model.padding=0", "model.kernel_size=29"]
    result = _ddp(tmp_path, tiny_data, *impossible, multirun=True, timeout=600)
    assert result.returncode == 1, (result.stdout + result.stderr)[-3000:]
    assert "job 0 failed" in result.stderr
    assert result.stderr.count("Impossible network geometry") == 1  # the run's, shown by the sweep
    assert "Traceback" not in result.stdout + result.stderr
    _, (job,) = _sweep(tmp_path)
    status = json.loads((job / "job_status.json").read_text())
    assert status["status"] == "failed" and "smaller than 1x1" in status["reason"]
    assert not (job / "metrics.json").exists() and not (job / ".claims").exists()


def test_an_interrupted_ddp_job_of_a_sweep_continues_on_resume(
    tmp_path: Path, tiny_data: Path
) -> None:
    # Ctrl-C at step 13 of job 0 (the terminal's SIGINT reaches the sweep, the job's run and its
    # two processes); job 1 would be interrupted at step 1000, that is never.
    interrupt = [
        "+callbacks.sig._target_=injected.GroupSignalAtStep",
        "+callbacks.sig.step=13,1000",
    ]
    result = _ddp(
        tmp_path, tiny_data, "trainer.max_epochs=2", *interrupt, multirun=True, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 130, output[-3000:]
    assert "The sweep was stopped during job 0" in output and "Traceback" not in output
    sweep, (job,) = _sweep(tmp_path)
    assert json.loads((job / "job_status.json").read_text())["status"] == "interrupted"
    state = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 13 and not (job / ".claims").exists()

    resumed = _ddp(tmp_path, tiny_data, f"resume={sweep}", multirun=True, timeout=600)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert "Continuing the stopped run from" in resumed.stdout
    _, jobs = _sweep(tmp_path)
    assert [r["status"] for r in _summary(sweep)] == ["ok", "ok"]
    finals = [json.loads((j / "metrics.json").read_text()) for j in jobs]
    assert [m["epochs"] for m in finals] == [2, 2]
    for j in jobs:
        assert torch.load(j / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 20
    # Continued exactly where it stopped: the same result as job 1, which ran through.
    assert finals[0]["test/acc"] == pytest.approx(finals[1]["test/acc"], abs=1e-6)
    assert finals[0]["val/acc_best"] == pytest.approx(finals[1]["val/acc_best"], abs=1e-6)


def test_sweep_jobs_that_train_in_several_processes_run_apart(monkeypatch) -> None:
    from lenet_cli.sweeps.ddp_job import runs_apart

    def job(**trainer) -> DictConfig:
        return OmegaConf.create({"trainer": {"accelerator": "cpu", "devices": 1, **trainer}})

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert not runs_apart(job()) and not runs_apart(job(strategy="auto", devices=[0]))
    assert runs_apart(job(strategy={"_target_": "pytorch_lightning.strategies.DDPStrategy"}))
    assert runs_apart(job(strategy="ddp_spawn")) and runs_apart(job(devices=2))  # Lightning: DDP
    assert runs_apart(job(accelerator="auto", devices="auto"))  # every GPU of this machine
    assert runs_apart(job(devices=1, num_nodes=2))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert not runs_apart(job(accelerator="gpu", devices=-1))
    monkeypatch.setenv("SLURM_JOB_ID", "7")  # srun starts a SLURM job's processes itself
    monkeypatch.setenv("SLURM_JOB_NAME", "sweep")
    assert not runs_apart(job(strategy="ddp", devices=2))
