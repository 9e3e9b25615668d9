"""`hparams_search=optuna`: an Optuna search whose study lives on disk, can be resumed, and can be
shared by several commands at once.

Why not hydra-optuna-sweeper: its 1.3 release pins optuna<3 (whose database storages break on
SQLAlchemy 2, and which has no journal file), its 1.4 line exists only as release candidates, and
neither lets a second command continue a study to a total number of trials in the same folders.
This sweeper reads the same settings (direction, study_name, storage, n_trials, n_jobs,
max_failure_rate, sampler, params) and runs each trial as a Hydra job through the configured
launcher, numbered by its trial number:

- the study is stored in the sweep folder (optuna.journal) unless hydra.sweeper.storage names one;
- it asks for trials until the study holds n_trials of them (finished, failed or running), so a
  resumed search (`lenet-train -m resume=<sweep folder> hydra.sweeper.n_trials=40`) runs only the
  difference, and several commands on one study never run more than n_trials together;
- trials this sweep folder started and never finished run again first, in their own job folders
  (lenet-train continues them from last.ckpt, or returns a result it already wrote);
- a failed trial is told to Optuna as failed and the search goes on, up to max_failure_rate.

The search space and storage helpers are in lenet_cli/sweeps/study.py.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lenet_cli.errors import LenetError, Refused
from lenet_cli.files import write_text_atomic
from lenet_cli.run_folder import RunFolder
from lenet_cli.sweeps import study as studies
from lenet_cli.sweeps.launch import (
    ClaimingSweeper,
    claim_jobs,
    job_folder,
    launch_claimed,
    runs_in_the_sweeps_process,
)

log = logging.getLogger(__name__)


class OptunaSweeper(ClaimingSweeper):
    def __init__(
        self,
        sampler: Any = None,
        direction: str = "maximize",
        study_name: str = "lenet",
        storage: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        max_failure_rate: float = 1.0,
        params: Any = None,
        pruner: Any = None,  # read by each job, which reports to its trial (sweeps/pruning.py)
    ) -> None:
        self.sampler_config = sampler
        self.direction = str(direction)
        self.study_name = str(study_name)
        self.storage = storage
        self.n_trials = int(n_trials)
        self.n_jobs = max(1, int(n_jobs))
        self.max_failure_rate = float(max_failure_rate)
        self.params = OmegaConf.to_container(params) if isinstance(params, DictConfig) else params

    def _set_sampler(self, study, folder: Path) -> None:
        """Set the configured sampler. A seeded one is seeded anew for each command that joins a
        study, from the trials it already holds (and, for a study shared by several commands,
        from this command's machine, process and folder): otherwise a resumed search or a second
        worker would propose the very trials the first run proposed. A fresh search keeps the
        seed given (the same command proposes the same trials)."""
        import os
        import socket
        import zlib

        from hydra.utils import instantiate

        config, held, shared = self.sampler_config, studies.trials_held(study), bool(self.storage)
        seed = None if config is None else config.get("seed")
        if seed is not None and (held or shared):
            me = f"{socket.gethostname()}:{os.getpid()}:{folder.name}"
            shift = held + (zlib.crc32(me.encode()) if shared else 0)
            study.sampler = instantiate(config, seed=(int(seed) + shift) % 2**32)
        elif config is not None:  # else Optuna's default
            study.sampler = instantiate(config)

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        assert self.config is not None and self.launcher is not None
        folder = Path(str(self.config.hydra.sweep.dir))
        try:
            space = studies.SearchSpace(self.params or {}, arguments)  # refusals before any file
            storage = studies.open_storage(str(self.storage or folder / studies.JOURNAL_FILE))
            write_text_atomic(folder / "multirun.yaml", OmegaConf.to_yaml(self.config))
            study = optuna.create_study(  # or join it: another command, or an earlier run, made it
                storage=storage,
                study_name=self.study_name,
                direction=self.direction,
                load_if_exists=True,
            )
            self._set_sampler(study, folder)
            unfinished, abandoned = studies.left_running(study, folder)
            for number in abandoned:
                log.warning("Trial %d was left running by a command that died: failed", number)
            self._fill_slots(study, space, folder, unfinished)
        except LenetError as error:  # inside Hydra: lenet-train shows the panel (cli/app.py)
            raise Refused(error) from None
        try:
            best = study.best_trial
        except ValueError:
            return  # no trial completed: the sweep summary says why
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value,
                   "best_trial": best.number}  # fmt: skip
        OmegaConf.save(OmegaConf.create(results), folder / "optimization_results.yaml")

    def _fill_slots(self, study, space, folder: Path, unfinished: list) -> None:
        """Run trials until the study holds n_trials, n_jobs of them at every moment: a slot
        freed by a finished, pruned or failed trial starts the next one at once (Hydra's
        launchers run one batch at a time, so each slot is a thread that launches one trial at
        a time). A launcher that runs jobs inside this process has one slot."""
        lock, stop = threading.Lock(), threading.Event()
        told = failed = 0

        def slot() -> None:
            nonlocal told, failed
            while not stop.is_set():
                with lock:  # one ask at a time, so that n_trials is never overshot here
                    job = self._next_trial(study, space, folder, unfinished)
                if job is None:
                    return
                ok = tell_result(study, job[0], job[2], launch_claimed(self, [job])[0])
                with lock:
                    told, failed = told + 1, failed + (not ok)
                    if not ok and failed / told > self.max_failure_rate and not stop.is_set():
                        log.warning(
                            "Stopping the search: %d of %d trials failed (max_failure_rate=%s).",
                            failed, told, self.max_failure_rate,
                        )  # fmt: skip
                        stop.set()

        if runs_in_the_sweeps_process(self.config.hydra.launcher) or self.n_jobs == 1:
            return slot()
        errors: list[BaseException] = []

        def guarded() -> None:
            try:
                slot()
            except BaseException as error:  # a slot's error ends the search, in this thread
                errors.append(error)
                stop.set()

        # Daemon threads, joined with a timeout: Ctrl-C or SIGTERM reaches this thread and the
        # sweep stops with its panel at once, leaving the trials that still run RUNNING in the
        # study (a resume continues them), instead of waiting for them to end.
        slots = [threading.Thread(target=guarded, daemon=True) for _ in range(self.n_jobs)]
        for thread in slots:
            thread.start()
        try:
            for thread in slots:
                while thread.is_alive():
                    thread.join(0.5)
        finally:
            stop.set()  # no slot starts another trial
        if errors:
            raise errors[0]

    def _next_trial(self, study, space, folder: Path, unfinished: list):
        """The next trial to run, its job folder claimed: first those this folder left
        unfinished (one another live command on this folder runs now is left to it), then new
        ones until the study holds n_trials. None when there is none."""
        from optuna.trial import TrialState

        while unfinished:
            trial = unfinished.pop(0)
            job = (trial.number, space.overrides(trial.params))
            run = RunFolder(job_folder(self, job[1], trial.number))
            if run.state() == "finished":  # finished, but the command ended before telling
                tell_result(study, trial.number, run)
            elif claimed := claim_jobs(self, [job], 1)[0]:
                log.info("Trial %d was not finished: running it again", trial.number)
                return claimed[0]
        while studies.trials_held(study) < self.n_trials:
            trial = study.ask(space.distributions)
            # Trials are numbered in the order the storage created them: counting those before
            # this one decides, even when another command asked at the same moment.
            if studies.trials_held(study, before=trial.number) >= self.n_trials:
                trial.set_user_attr(studies.NOT_RUN_ATTR, "the study already held n_trials")
                study.tell(trial, state=TrialState.FAIL)
                return None
            trial.set_user_attr(studies.FOLDER_ATTR, str(folder.resolve()))
            if claimed := claim_jobs(self, [(trial.number, space.overrides(trial.params))], 1)[0]:
                return claimed[0]
            # Its job folder is finished or busy (a study renamed or deleted on an old folder):
            # the trial cannot run here, and must not be held RUNNING for ever.
            trial.set_user_attr(studies.NOT_RUN_ATTR, "its job folder was taken")
            study.tell(trial, state=TrialState.FAIL)
        return None


def tell_result(study, number: int, run: RunFolder, job: Any = None) -> bool:
    """Tell Optuna a trial's outcome: PRUNED when its job stopped on the pruner's word (a pruned
    trial is no failure), else the value its job returned (lenet-train returns None for a failed
    job, see lenet_cli/sweeps/launch.py) or, with no job, the one its run folder recorded. A
    value that is not a finite number fails the trial. Returns whether the trial did not fail."""
    import math

    from optuna.trial import TrialState

    try:  # job.return_value re-raises an exception the job did not handle
        value = run.metrics().get("val/acc_best") if job is None else job.return_value
    except Exception:  # HYDRA_FULL_ERROR=1 lets job errors through: stop here too
        study.tell(number, state=TrialState.FAIL)
        raise
    if run.status().get("status") == "interrupted":  # stopped from outside, with its last.ckpt:
        return True  # left RUNNING, so that `-m resume=` continues it (studies.left_running)
    if run.status().get("status") == "pruned":
        study.tell(number, state=TrialState.PRUNED)
        return True
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        study.tell(number, state=TrialState.FAIL)
        return False
    study.tell(number, value)
    return True
