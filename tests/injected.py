"""Lightning callbacks that tests inject into real runs (`+callbacks.<name>._target_=injected.X`),
so that an event happens at a known step instead of after a guessed sleep."""

from __future__ import annotations

import atexit
import os
import signal
from pathlib import Path

import pytorch_lightning as pl
from hydra.experimental.callback import Callback


class AtExitMarker(pl.Callback):
    """Registers an exit handler during the run, as a user's logger might; it writes `path`."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        atexit.register(self.path.write_text, "exit handler ran\n")


class SignalAtStep(pl.Callback):
    """Sends this process `signal_name` (SIGTERM by default) after `step` optimiser steps; in a
    sweep, only in job number `job` when given."""

    def __init__(self, step: int, signal_name: str = "SIGTERM", job: int | None = None) -> None:
        self.step, self.signal, self.job = step, getattr(signal, signal_name), job

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and self._in_job():
            os.kill(os.getpid(), self.signal)

    def _in_job(self) -> bool:
        if self.job is None:
            return True
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().job.num == self.job


class GroupSignalAtStep(pl.Callback):
    """Rank 0 sends its whole process group `signal_name` after `step` steps: what a terminal
    does on Ctrl-C (every process of a DDP run gets SIGINT at once)."""

    def __init__(self, step: int, signal_name: str = "SIGINT") -> None:
        self.step, self.signal = step, getattr(signal, signal_name)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.global_rank == 0:
            os.killpg(os.getpgid(0), self.signal)


class PoisonBatch(pl.Callback):
    """Fills one process's training batch with NaN at `step` (one rank's bad batch under DDP)."""

    def __init__(self, step: int, rank: int = 1) -> None:
        self.step, self.rank = step, rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            batch[0].fill_(float("nan"))


class SlurmEventAtStep(pl.Callback):
    """At `step` (first start of the job only), rank 0 asks the real SLURM for an event on its own
    job: `warning` sends SLURM's warning signal (scancel --signal=USR1 --full, what sbatch
    --signal=USR1@<s> does before a time limit); `requeue` requeues it (scontrol requeue: SIGTERM,
    then the job starts again); `time-limit` sends submitit's time-limit signal to the job's steps
    (scancel --signal=USR2, what submitit's sbatch --signal=USR2@<s> does). It then waits until
    the signal has arrived, so the run stops right after this step, not at one that depends on
    timing."""

    def __init__(self, step: int, event: str) -> None:
        self.step, self.event = step, event

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import subprocess
        import time

        from lenet_cli.training import interrupts

        first_start = os.environ.get("SLURM_RESTART_COUNT", "0") == "0"
        if trainer.global_step != self.step or not first_start or trainer.global_rank != 0:
            return
        from lenet_cli.cluster import job_id

        job = job_id()  # this task only: an array's own id would signal all of it
        command = {
            "warning": ["scancel", "--signal=USR1", "--full", job],
            "requeue": ["scontrol", "requeue", job],
            "time-limit": ["scancel", "--signal=USR2", job],
        }[self.event]
        subprocess.run(command, check=True)
        deadline = time.monotonic() + 60
        while not interrupts.requested() and time.monotonic() < deadline:
            time.sleep(0.05)


class FailAtStep(pl.Callback):
    """Raises a RuntimeError after `step` optimiser steps: a run that fails during the fit."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("injected failure")


class MeetOtherWorker(pl.Callback):
    """Several commands sharing one sweep: each job records which process trained it
    (`<folder>/<job>-<pid>`), then waits until two different processes have started jobs, so
    that both commands hold a job before either goes on (an event, not a guessed sleep)."""

    def __init__(self, folder: str, timeout: float = 120) -> None:
        self.folder, self.timeout = Path(folder), timeout

    def on_fit_start(self, trainer, pl_module) -> None:
        import time

        from hydra.core.hydra_config import HydraConfig

        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{HydraConfig.get().job.num}-{os.getpid()}").touch()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if len({p.name.split("-")[1] for p in self.folder.iterdir()}) >= 2:
                return
            time.sleep(0.05)


class KillAtStep(pl.Callback):
    """SIGKILL to this process after `step` optimiser steps (nothing can be saved:
    what `kill -9`, the out-of-memory killer or a lost node does); in a sweep, only in job `job`
    when given. Once: `marker` records it, so that a resume, which replays the command, is not
    killed again."""

    def __init__(self, step: int, marker: str, job: int | None = None) -> None:
        self.step, self.job, self.marker = step, job, Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        from hydra.core.hydra_config import HydraConfig

        in_job = self.job is None or HydraConfig.get().job.num == self.job
        if trainer.global_step == self.step and in_job:
            if not self.marker.exists():
                self.marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)


class SignalAfterJob(Callback):
    """A Hydra callback (`+hydra.callbacks.<name>._target_=injected.SignalAfterJob`): sends this
    process `signal_name` when job `job` has ended, between two jobs of a sweep."""

    def __init__(self, job: int, signal_name: str = "SIGTERM") -> None:
        self.job, self.signal = job, getattr(signal, signal_name)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if config.hydra.job.num == self.job:
            os.kill(os.getpid(), self.signal)


class FillDiskAtStep(pl.Callback):
    """Fills the file system of `path` after `step` optimiser steps, once (`path` itself stays
    behind as the proof): every later write of the run meets a full disk."""

    def __init__(self, step: int, path: str) -> None:
        self.step, self.path = step, Path(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self.step or self.path.exists():
            return
        with open(self.path, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass


class KillAt(pl.Callback):
    """SIGKILL to this process at a moment of the run, once (`marker` records it): `start` (the
    fit starts), `train` (after step `step`), `validation` (a validation batch of epoch `epoch`),
    `checkpoint` (a checkpoint of epoch `epoch` about to be written), `test` (a test batch)."""

    def __init__(self, moment: str, marker: str, step: int = 0, epoch: int = 0) -> None:
        self.moment, self.marker, self.step, self.epoch = moment, Path(marker), step, epoch

    def _kill(self, moment: str, now: bool = True) -> None:
        if moment == self.moment and now and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._kill("start")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._kill("train", trainer.global_step == self.step)

    def on_validation_batch_end(self, trainer, pl_module, *args, **kwargs) -> None:
        self._kill(
            "validation", trainer.current_epoch == self.epoch and not trainer.sanity_checking
        )

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._kill("checkpoint", trainer.current_epoch == self.epoch)

    def on_test_batch_end(self, trainer, pl_module, *args, **kwargs) -> None:
        self._kill("test")


class WaitForJob(pl.Callback):
    """In sweep job `job`, waits at the start of training until job `other` of the same sweep
    has started (its folder holds .hydra/): an order of events that only a free slot allows
    (with batches of n_jobs, `other` would start after `job` ended). Gives up after `limit`
    seconds, which fails the job and the test."""

    def __init__(self, job: int, other: int, limit: float = 240.0) -> None:
        self.job, self.other, self.limit = job, other, limit

    def on_train_start(self, trainer, pl_module) -> None:
        import time

        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.job.num != self.job:
            return
        sweep, deadline = Path(hydra_cfg.sweep.dir), time.monotonic() + self.limit
        pattern = [f"{self.other}/.hydra", f"{self.other}_*/.hydra"]
        while not any(any(sweep.glob(p)) for p in pattern):
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {self.other} did not start while job {self.job} ran")
            time.sleep(0.1)
