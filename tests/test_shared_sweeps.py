"""One model of a run folder (lenet_cli/run_folder.py): claims that exactly one process wins,
owners that are alive or dead, and several commands sharing one sweep's jobs. Real lenet-train
commands on the tiny synthetic digits; events are injected at known steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BIN, TINY, run_cli

from lenet_cli.run_folder import CLAIMS, RunFolder

QUICK = [*TINY, "callbacks=none", "++trainer.limit_train_batches=4",
         "++trainer.limit_val_batches=2", "test=false"]  # fmt: skip
INJECTED = {"PYTHONPATH": str(Path(__file__).parent)}


def test_a_claim_is_won_by_exactly_one_of_many_processes(tmp_path: Path) -> None:
    claim = (
        "import sys; from lenet_cli.run_folder import RunFolder; "
        "owner = RunFolder(sys.argv[1]).claim(); print('won' if owner is None else 'lost'); "
        "sys.stdout.flush(); sys.stdin.read()"  # holds the claim until the test ends it
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", claim, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(6)
    ]
    answers = [w.stdout.readline().strip() for w in workers]
    assert sorted(answers) == ["lost"] * 5 + ["won"]
    winner = workers[answers.index("won")]
    assert RunFolder(tmp_path).state() == "running"
    assert RunFolder(tmp_path).owner().pid == winner.pid
    for w in workers:
        w.communicate("")
    # Its process is gone: on this host that owner is dead at once, and the folder is free.
    run = RunFolder(tmp_path)
    assert run.state() == "new" and not run.owner().alive()
    assert run.claim() is None and run.owner().is_me()
    assert sorted(p.name for p in (tmp_path / CLAIMS).iterdir()) == ["1.json", "2.json"]
    run.release()
    assert not (tmp_path / CLAIMS).exists()


def test_an_owner_on_another_host_is_alive_until_its_lease_runs_out(tmp_path: Path) -> None:
    from lenet_cli import run_folder

    (tmp_path / CLAIMS).mkdir()
    record = {"host": "node-elsewhere", "pid": 1, "started": None, "slurm_job": None, "since": 0}
    path = tmp_path / CLAIMS / "1.json"
    path.write_text(json.dumps(record))
    run = RunFolder(tmp_path)
    assert run.state() == "running" and run.claim() is not None
    old = path.stat().st_mtime - run_folder.LEASE_SECONDS - 1
    os.utime(path, (old, old))  # not renewed for a whole lease
    assert run.state() == "new" and run.claim() is None and run.owner().is_me()


def test_two_runs_in_one_folder_the_second_is_refused(tmp_path: Path, tiny_data: Path) -> None:
    first = run_cli(*QUICK, cwd=tmp_path, data=tiny_data)
    assert first.returncode == 0, first.stderr[-3000:]
    (folder,) = [p for p in (tmp_path / "outputs").glob("*/*")]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from lenet_cli.run_folder import RunFolder; "
         "RunFolder(sys.argv[1]).claim(); print('held', flush=True); sys.stdin.read()",
         str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    second = run_cli(f"resume={folder}", cwd=tmp_path, data=tiny_data)
    holder.communicate("")
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"is running in process {holder.pid}" in " ".join(second.stderr.split())


@pytest.mark.slow  # a run killed with kill -9, then resumed
def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(
    tmp_path: Path, tiny_data: Path
) -> None:
    kill = ["+callbacks.kill._target_=injected.KillAtStep", "+callbacks.kill.step=2",
            f"+callbacks.kill.marker={tmp_path / 'killed'}"]  # fmt: skip
    killed = run_cli(*QUICK, *kill, cwd=tmp_path, data=tiny_data, env=INJECTED)
    assert killed.returncode == -9
    (folder,) = (tmp_path / "outputs").glob("*/*")
    assert RunFolder(folder).state() == "new"  # no checkpoint yet, and its owner is gone
    resumed = run_cli(f"resume={folder}", cwd=tmp_path, data=tiny_data, env=INJECTED)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (new,) = [p for p in (tmp_path / "outputs").glob("*/*") if p != folder]
    assert json.loads((new / "metrics.json").read_text())["epochs"] == 1  # trained from the start
    assert "ckpt_path" not in (new / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow  # a 6-job grid, two resumes at once, then a killed and a taken-over job
def test_two_resumes_of_one_grid_share_its_jobs_and_a_killed_one_is_taken_over(
    tmp_path: Path, tiny_data: Path
) -> None:
    # A 6-job grid stopped by Ctrl-C in job 0: jobs 1-5 never started.
    interrupt = ["+callbacks.stop._target_=injected.SignalAtStep", "+callbacks.stop.step=2",
                 "+callbacks.stop.signal_name=SIGINT", "+callbacks.stop.job=0"]  # fmt: skip
    grid = ["optimizer.lr=0.01,0.009,0.008,0.007,0.006,0.005", *QUICK, *interrupt]
    stopped = run_cli("-m", *grid, cwd=tmp_path, data=tiny_data, env=INJECTED)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")

    # Two resumes at once: each job records its process, and waits until both commands hold one.
    marks = tmp_path / "marks"
    meet = ["+callbacks.meet._target_=injected.MeetOtherWorker", f"+callbacks.meet.folder={marks}"]
    env = {**os.environ, "LENET_DATA_DIR": str(tiny_data), "COLUMNS": "120", **INJECTED}
    command = [str(BIN / "lenet-train"), "-m", f"resume={sweep}", *meet]
    workers = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    results = [w.communicate(timeout=600) for w in workers]
    for worker, (_, err) in zip(workers, results, strict=True):
        assert worker.returncode == 0, err[-3000:]
        assert "Traceback" not in err
    trained = sorted(p.name for p in marks.iterdir())
    assert sorted(int(name.split("-")[0]) for name in trained) == [0, 1, 2, 3, 4, 5]  # once each
    assert len({name.split("-")[1] for name in trained}) == 2  # both commands took a share
    assert sum("Continuing the stopped run from" in out for out, _ in results) == 1  # job 0
    rows = (sweep / "summary.csv").read_text().splitlines()[1:]
    assert len(rows) == 6 and all(",ok," in row for row in rows)

    # A third resume after job 3 is run again from scratch and killed (kill -9) mid-job:
    # nothing could be saved, the claim's owner is dead, and the next resume takes it over.
    job3 = next(p for p in sweep.iterdir() if p.name.startswith("3_"))
    for done in (
        "metrics.json",
        "job_status.json",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
    ):
        (job3 / done).unlink()
    kill = ["+callbacks.kill._target_=injected.KillAtStep", "+callbacks.kill.step=6",
            "+callbacks.kill.job=3", f"+callbacks.kill.marker={tmp_path / 'killed'}",
            "trainer.max_epochs=2"]  # fmt: skip
    killed = run_cli("-m", f"resume={sweep}", *kill, cwd=tmp_path, data=tiny_data, env=INJECTED)
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-3000:]
    assert RunFolder(job3).state() == "stopped"  # last.ckpt of its first epoch, no live owner
    again = run_cli("-m", f"resume={sweep}", cwd=tmp_path, data=tiny_data, env=INJECTED)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("Continuing the stopped run from") == 1
    assert json.loads((job3 / "metrics.json").read_text())["epochs"] == 2


def test_sigterm_between_two_jobs_ends_with_the_resume_panel(
    tmp_path: Path, tiny_data: Path
) -> None:
    between = [
        "+hydra.callbacks.stop._target_=injected.SignalAfterJob",
        "+hydra.callbacks.stop.job=0",
    ]
    stopped = run_cli("-m", "optimizer.lr=0.01,0.003", *QUICK, *between, cwd=tmp_path,
                      data=tiny_data, env=INJECTED)  # fmt: skip
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    text = " ".join(stopped.stderr.split())
    assert f"lenet-train -m resume={sweep.relative_to(tmp_path)}" in text
    assert "Traceback" not in stopped.stderr
    assert sorted(p.name.split("_")[0] for p in sweep.iterdir() if p.is_dir()) == ["0"]


def test_a_journal_cut_off_mid_line_is_repaired_and_other_damage_refused(tmp_path: Path) -> None:
    from lenet_cli.errors import ConfigError
    from lenet_cli.sweeps.study import open_storage

    journal = tmp_path / "optuna.journal"
    whole = b'{"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [1]}\n'
    journal.write_bytes(whole + b'{"op_code": 4, "worker_id"')  # a write that stopped part-way
    open_storage(str(journal))
    assert journal.read_bytes() == whole  # the partial record went; a copy keeps it
    (copy,) = tmp_path.glob("optuna.journal.damaged-*")
    assert copy.read_bytes().endswith(b'"worker_id"')

    damaged = whole + b"not json\n" + whole
    journal.write_bytes(damaged)
    with pytest.raises(ConfigError, match="line 2 of the study's journal does not parse"):
        open_storage(str(journal))
    assert journal.read_bytes() == damaged  # left as it is


def test_a_storage_password_is_refused_and_never_shown(tmp_path: Path) -> None:
    url = "hydra.sweeper.storage=postgresql://bob:s3cret-pw@localhost:1/optuna"
    refused = run_cli("-m", "hparams_search=optuna", url, cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "s3cret-pw" not in refused.stdout + refused.stderr
    assert "postgresql://bob:***@localhost:1/optuna" in " ".join(refused.stderr.split())
    assert not (tmp_path / "outputs").exists()  # refused before any folder

    from lenet_cli.sweeps.study import without_password

    shown = without_password("(psycopg.OperationalError) postgresql://bob:pw@h/db failed")
    assert shown == "(psycopg.OperationalError) postgresql://bob:***@h/db failed"


def test_a_trial_left_running_by_a_dead_command_is_replaced(
    tmp_path: Path, tiny_data: Path
) -> None:
    import optuna

    # Another sweep folder's command asked for trial 0, claimed its job folder, and died.
    from lenet_cli.sweeps.study import open_storage

    journal = tmp_path / "study.journal"
    study = optuna.create_study(study_name="lenet", storage=open_storage(str(journal)),
                                direction="maximize")  # fmt: skip
    dead_sweep = tmp_path / "elsewhere"
    trial = study.ask()
    trial.set_user_attr("sweep_folder", str(dead_sweep.resolve()))
    job = dead_sweep / "0_optimizer.lr=0.001"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    (job / ".claims").mkdir(parents=True)
    (job / ".claims" / "1.json").write_text(json.dumps(
        {"host": __import__("socket").gethostname(), "pid": int(gone), "started": None,
         "slurm_job": None, "since": 0}))  # fmt: skip

    search = ["hparams_search=optuna", *QUICK, f"hydra.sweeper.storage={journal}",
              "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=1"]  # fmt: skip
    result = run_cli(
        "-m", *search, cwd=tmp_path, data=tiny_data, env={"LENET_THREADS_PER_JOB": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    states = {t.number: t.state.name for t in optuna.load_study(
        study_name="lenet", storage=open_storage(str(journal))).get_trials()}  # fmt: skip
    assert states == {0: "FAIL", 1: "COMPLETE", 2: "COMPLETE"}  # two trials in its place


def test_a_claim_of_a_slurm_job_is_dead_only_for_its_restarted_self(
    tmp_path: Path, monkeypatch
) -> None:
    import socket

    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    peer = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)  # fmt: skip
    (tmp_path / CLAIMS).mkdir()
    record = {"host": socket.gethostname(), "pid": peer.pid, "started": None,
              "slurm_job": "77:0", "since": 0}  # fmt: skip
    (tmp_path / CLAIMS / "1.json").write_text(json.dumps(record))
    try:
        assert RunFolder(tmp_path).owner().alive()  # a live peer in the same start of the job
        monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
        assert not RunFolder(tmp_path).owner().alive()  # the job started again: that start is over
    finally:
        peer.communicate(b"")


@pytest.mark.slow  # three commands, one of them killed: make test-slow
def test_a_journal_lock_left_by_a_killed_command_does_not_stall_a_resume(
    tmp_path: Path, tiny_data: Path
) -> None:
    env = {"LENET_THREADS_PER_JOB": "1"}
    search = ["hparams_search=optuna", *QUICK, "hydra.sweeper.n_trials=1"]
    first = run_cli("-m", *search, cwd=tmp_path, data=tiny_data, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    journal, lock = sweep / "optuna.journal", sweep / "optuna.journal.lock"
    # A command killed with kill -9 while it held Optuna's lock on the journal (mid-write) ...
    hold = ("import os, sys; from optuna.storages.journal import JournalFileSymlinkLock; "
            "JournalFileSymlinkLock(sys.argv[1]).acquire(); os.kill(os.getpid(), 9)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", hold, str(journal)]).returncode == -9
    assert lock.is_symlink()
    taken = os.lstat(lock).st_mtime - 60  # ... a minute ago: longer than Optuna's grace period
    os.utime(lock, (taken, taken), follow_symlinks=False)

    resumed = run_cli("-m", f"resume={sweep}", "hydra.sweeper.n_trials=2", cwd=tmp_path,
                      data=tiny_data, env=env)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = " ".join(resumed.stdout.split())
    assert "optuna.journal.lock, left by a command that was killed" in said, said[-3000:]
    assert "Forcibly releasing" not in resumed.stderr  # Optuna did not wait out its grace period
    assert not lock.is_symlink()
    assert sorted(int(p.name.split("_")[0]) for p in sweep.iterdir() if p.is_dir()) == [0, 1]
