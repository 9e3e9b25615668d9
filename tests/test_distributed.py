"""Two-process DDP on CPU (gloo) under Hydra: one run folder, metrics over the whole test set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_cli, run_folders
from omegaconf import OmegaConf

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


def _ddp(tmp_path: Path, data: Path, *overrides: str, timeout: float = 180):
    import os
    import subprocess
    import sys

    tests = str(Path(__file__).parent)
    env = {**os.environ, "LENET_DATA_DIR": str(data), "PYTHONPATH": tests, "COLUMNS": "120"}
    env.pop("HYDRA_FULL_ERROR", None)
    # A session of its own: the injected Ctrl-C goes to this run's processes only.
    return subprocess.run(
        [str(Path(sys.executable).parent / "lenet-train"), *DDP_TINY, *overrides],
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
