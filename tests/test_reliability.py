"""Interrupted runs resume exactly; parallel runs never share a folder; divergence stops cleanly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import compose_train, run_cli, run_folders, write_mnist

from lenet_cli.cli.train import train
from lenet_cli.errors import Interrupted

# Two epochs of 50 steps (2,500 training images, batches of 50), interrupted inside the second.
RESUMABLE = [
    "model=modern",
    "callbacks=none",
    "trainer.deterministic=true",
    "seed=1",
    "trainer.max_epochs=2",
    "data.val_size=500",
    "data.batch_size=50",
    "data.eval_batch_size=500",
    "trainer.log_every_n_steps=20",
    "data.augment=true",  # the random draws, too, continue where they stopped
]
STOP_AT = 73  # an optimiser step inside the second epoch


@pytest.fixture(scope="module")
def medium_data(tmp_path_factory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("medium"), n_train=3000, n_test=500)


def _env(data: Path) -> dict:
    env = {**os.environ, "LENET_DATA_DIR": str(data), "COLUMNS": "200"}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _fit(out: Path, data: Path, *overrides: str) -> dict:
    train(compose_train([f"data.root={data}", *RESUMABLE, *overrides], out))
    return json.loads((out / "metrics.json").read_text())


# onecycle sizes itself with trainer.estimated_stepping_batches, so Lightning builds the loader
# before restoring it (the DataModule's state hands the position over); step does not.
@pytest.mark.parametrize("scheduler", ["onecycle", "step"])
def test_sigterm_at_a_known_step_resumes_bit_for_bit(
    tmp_path: Path, medium_data: Path, scheduler: str
) -> None:
    expected = _fit(tmp_path / "straight", medium_data, f"scheduler={scheduler}")

    interrupt = [
        "+callbacks.interrupt._target_=injected.SignalAtStep",
        f"+callbacks.interrupt.step={STOP_AT}",
    ]
    with pytest.raises(Interrupted) as caught:
        _fit(tmp_path / "stopped", medium_data, f"scheduler={scheduler}", *interrupt)
    message = " ".join(caught.value.message.split())
    assert f"Training stopped after step {STOP_AT}" in message and "Resume with" in message
    assert not (tmp_path / "stopped" / "metrics.json").exists()
    last = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == STOP_AT and state["epoch"] == 1
    # The training loader's own position (Lightning's stateful-loader protocol).
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches_done": STOP_AT - 50, "seed": 1}
    ]

    resumed = _fit(tmp_path / "resumed", medium_data, f"scheduler={scheduler}", f"ckpt_path={last}")
    final = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 100  # the interrupted epoch ran its remaining 27 steps
    timings = ("fit_seconds", "train_samples_per_second")
    assert {k: v for k, v in resumed.items() if k not in timings} == {
        k: v for k, v in expected.items() if k not in timings
    }  # every metric bit for bit, the training ones of the interrupted epoch included


def test_sigterm_ends_the_command_with_the_resume_command(tmp_path: Path, tiny_data: Path) -> None:
    result = run_cli(
        "model=tutorial",
        "callbacks=none",
        "data.val_size=200",
        "data.batch_size=50",
        "trainer.max_epochs=2",
        "+callbacks.interrupt._target_=injected.SignalAtStep",
        "+callbacks.interrupt.step=25",
        cwd=tmp_path,
        data=tiny_data,
        env={"PYTHONPATH": str(Path(__file__).parent)},
    )
    assert result.returncode == 130, result.stderr[-2000:]
    text = " ".join(result.stderr.split())
    assert "Training stopped after step 25" in text and "Traceback" not in result.stderr
    (run,) = run_folders(tmp_path)
    assert f"ckpt_path={run.relative_to(tmp_path)}/checkpoints/last.ckpt" in text
    assert (run / "checkpoints" / "last.ckpt").exists() and not (run / "metrics.json").exists()


@pytest.mark.slow  # two commands, the second continuing the first
def test_resume_shorthand_finds_the_run(tmp_path: Path, tiny_data: Path) -> None:
    first = run_cli(
        "model=tutorial",
        "callbacks=none",
        "trainer.max_epochs=1",
        "data.val_size=200",
        "scheduler=step",
        cwd=tmp_path,
        data=tiny_data,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    (run,) = run_folders(tmp_path)
    again = run_cli(f"resume={run}", "trainer.max_epochs=2", cwd=tmp_path, data=tiny_data)
    assert again.returncode == 0, again.stderr[-2000:]
    new = [r for r in run_folders(tmp_path) if r != run][0]
    config = (new / ".hydra" / "config.yaml").read_text()
    assert f"ckpt_path: {run}/checkpoints/last.ckpt" in config and "name: tutorial" in config
    assert json.loads((new / "metrics.json").read_text())["epochs"] == 2


def test_runs_claiming_the_same_second_get_their_own_folders(tmp_path: Path) -> None:
    import multiprocessing

    from lenet_cli.cli.app import claim_folder

    # Four processes (forked: they start in milliseconds, with claim_folder already imported)
    # wait for each other, then claim a run folder with the same time stamp at once.
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(4), context.Queue()

    def claim() -> None:
        barrier.wait()
        queue.put(claim_folder(tmp_path, "12-00-00").name)

    workers = [context.Process(target=claim) for _ in range(4)]
    for worker in workers:
        worker.start()
    names = sorted(queue.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    assert names == ["12-00-00", "12-00-00-2", "12-00-00-3", "12-00-00-4"]


def test_diverging_loss_stops_with_the_step_and_advice(tmp_path: Path, tiny_data: Path) -> None:
    result = run_cli(
        "model=modern",
        "optimizer=sgd",
        "optimizer.lr=1e12",
        "scheduler=none",
        "trainer.max_epochs=1",
        "data.val_size=200",
        cwd=tmp_path,
        data=tiny_data,
        env={"COLUMNS": "80"},
    )
    assert result.returncode == 1
    text = " ".join(result.stderr.split())
    assert "at step" in text and "optimizer.lr=1e+11" in text and "Traceback" not in result.stderr
    (run,) = run_folders(tmp_path)
    assert (run / ".hydra" / "config.yaml").exists() and (run / "train.log").exists()
    # In an 80-column terminal the panel shows in the first screen, and the whole output fits it.
    lines = (result.stdout + result.stderr).splitlines()
    first = next(i for i, line in enumerate(lines) if "Training failed" in line)
    assert first < 40 and len(lines) <= 40, "\n".join(lines)


def test_a_failed_fit_gives_the_signals_back(tmp_path: Path, tiny_data: Path) -> None:
    # Lightning calls Callback.teardown only after a fit that succeeded; the next job of a sweep
    # (or the rest of the process) must get Ctrl-C and SIGTERM back all the same.
    import signal

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    fail = ["+callbacks.fail._target_=injected.FailAtStep", "+callbacks.fail.step=2"]
    with pytest.raises(RuntimeError, match="injected failure"):
        _fit(tmp_path, tiny_data, *fail)
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_restarted_slurm_job_finds_the_run_of_its_own_command(
    tmp_path: Path, monkeypatch
) -> None:
    import yaml

    from lenet_cli.run_folder import existing_job_folder

    for name, overrides, done in (
        ("slurm-7", ["optimizer.lr=0.1"], False),
        ("slurm-7-2", ["optimizer.lr=0.01"], False),
        ("slurm-7-3", ["optimizer.lr=0.001"], True),
    ):
        (tmp_path / "2026-12-01" / name / ".hydra").mkdir(parents=True)
        (tmp_path / "2026-12-01" / name / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump(overrides)
        )
        if done:
            (tmp_path / "2026-12-01" / name / "metrics.json").write_text("{}")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    found = existing_job_folder(tmp_path, "slurm-7", ["optimizer.lr=0.01", "hydra.verbose=true"])
    assert found == tmp_path / "2026-12-01" / "slurm-7-2"  # Hydra's own settings aside
    assert existing_job_folder(tmp_path, "slurm-7", ["optimizer.lr=0.001"]) is None  # finished
    assert existing_job_folder(tmp_path, "slurm-7", ["optimizer.lr=0.5"]) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # a first start continues nothing
    assert existing_job_folder(tmp_path, "slurm-7", ["optimizer.lr=0.1"]) is None
