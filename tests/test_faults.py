"""Faults real machines have, injected at known steps: kill -9 at any moment of a run, resumed
each time with `resume=<newest run folder>`, ends bit for bit where a run never killed ends."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import run_cli, run_folders

INJECTED = {"PYTHONPATH": str(Path(__file__).parent)}
# Four epochs of 20 steps (1,000 training images, batches of 50), deterministic on the CPU.
RUN = ["model=modern", "callbacks=none", "trainer.deterministic=true", "seed=3",
       "trainer.max_epochs=4", "scheduler=cosine", "data.val_size=200", "data.batch_size=50",
       "data.eval_batch_size=200", "++trainer.limit_train_batches=20",
       "trainer.log_every_n_steps=5", "data.augment=true"]  # fmt: skip


@pytest.fixture(scope="module")
def never_killed(tmp_path_factory, tiny_data: Path) -> dict:
    """metrics.json of the run that the killed ones must end with, bit for bit."""
    cwd = tmp_path_factory.mktemp("straight")
    straight = run_cli(*RUN, cwd=cwd, data=tiny_data)
    assert straight.returncode == 0, straight.stderr[-3000:]
    (folder,) = run_folders(cwd)
    return json.loads((folder / "metrics.json").read_text())


# kill -9 at each moment of a run (epoch 3 of 4 for validation and checkpoint): the resume
# continues from the last whole checkpoint, or from the beginning when there is none yet.
MOMENTS = {
    "start-up": ["moment=start"],
    "mid-epoch": ["moment=train", "step=50"],
    "validation": ["moment=validation", "epoch=2"],
    "checkpoint write": ["moment=checkpoint", "epoch=2"],
    "test": ["moment=test"],
}


@pytest.mark.slow  # two real commands for each moment
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_kill_9_at_any_moment_resumes_to_the_same_test_loss(
    tmp_path: Path, tiny_data: Path, never_killed: dict, moment: str
) -> None:
    kill = ["+callbacks.kill._target_=injected.KillAt", f"+callbacks.kill.marker={tmp_path / 'k'}"]
    kill += [f"+callbacks.kill.{setting}" for setting in MOMENTS[moment]]
    killed = run_cli(*RUN, *kill, cwd=tmp_path, data=tiny_data, env=INJECTED)
    assert killed.returncode == -9, killed.stderr[-3000:]
    (folder,) = run_folders(tmp_path)
    resumed = run_cli(f"resume={folder}", cwd=tmp_path, data=tiny_data, env=INJECTED)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = json.loads((run_folders(tmp_path)[-1] / "metrics.json").read_text())
    assert (final["test/loss"], final["test/acc"]) == (
        never_killed["test/loss"], never_killed["test/acc"])  # fmt: skip


@pytest.mark.slow  # five real commands, four of them resumed: about half a minute
def test_three_kill_9_and_resumes_end_bit_for_bit_as_a_run_never_killed(
    tmp_path: Path, tiny_data: Path, never_killed: dict
) -> None:
    (tmp_path / "killed").mkdir()

    # Killed at step 10 (before the first checkpoint), 35 (mid-epoch 2) and 70 (mid-epoch 4):
    # each kill once, however often the command is resumed.
    kills = [
        f"+callbacks.kill{n}.{key}={value}"
        for n, step in enumerate((10, 35, 70))
        for key, value in (
            ("_target_", "injected.KillAtStep"),
            ("step", step),
            ("marker", tmp_path / f"killed-{n}"),
        )  # fmt: skip
    ]
    cwd = tmp_path / "killed"
    result = run_cli(*RUN, *kills, cwd=cwd, data=tiny_data, env=INJECTED)
    for _ in range(3):
        assert result.returncode == -9, result.stderr[-3000:]
        newest = run_folders(cwd)[-1]
        result = run_cli(f"resume={newest}", cwd=cwd, data=tiny_data, env=INJECTED)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(run_folders(cwd)) == 4
    final = json.loads((run_folders(cwd)[-1] / "metrics.json").read_text())
    kept = never_killed
    timings = ("fit_seconds", "train_samples_per_second")
    assert final["test/loss"] == kept["test/loss"]
    assert {k: v for k, v in final.items() if k not in timings} == {
        k: v for k, v in kept.items() if k not in timings
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root")
def test_a_full_disk_ends_in_a_panel_and_the_run_continues_once_there_is_room(
    tmp_path: Path, tiny_data: Path
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root with mount rights)")
    try:
        # The disk fills in epoch 2: the checkpoint at its end cannot be written.
        fill = ["+callbacks.fill._target_=injected.FillDiskAtStep", "+callbacks.fill.step=25",
                f"+callbacks.fill.path={disk / 'filler'}", f"paths.output_root={disk}"]  # fmt: skip
        full = run_cli(*RUN, *fill, cwd=tmp_path, data=tiny_data, env=INJECTED)
        assert full.returncode == 1, full.stderr[-3000:]
        shown = " ".join(full.stderr.split())
        assert "No space left on device" in shown and "Traceback" not in full.stderr
        (folder,) = disk.glob("*/*")
        assert f"lenet-train resume={folder.relative_to(tmp_path)}" in shown
        last = folder / "checkpoints" / "last.ckpt"
        assert torch.load(last, weights_only=True)["global_step"] == 20  # epoch 1's, whole
        assert not (folder / "metrics.json").exists()
        assert not list(folder.rglob("*.tmp"))  # no half-written file left behind

        (disk / "filler").write_bytes(b"")  # room again (the file stays: the disk fills once)
        again = run_cli(f"resume={folder}", cwd=tmp_path, data=tiny_data, env=INJECTED)
        assert again.returncode == 0, again.stderr[-3000:]
        (resumed,) = [p for p in disk.glob("*/*") if p != folder]
        assert json.loads((resumed / "metrics.json").read_text())["epochs"] == 4
    finally:
        subprocess.run(["umount", str(disk)], check=True)
