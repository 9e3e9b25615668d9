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
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lenet_cli.sweeps.launch import ClaimingSweeper

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

    def _sampler(self, held: int, shared: bool, folder: Path):
        """The configured sampler. A seeded one is seeded anew for each command that joins a
        study, from the trials it already holds (and, for a study shared by several commands,
        from this command's folder): otherwise a resumed search or a second worker would
        propose the very trials the first run proposed. A fresh search keeps the seed given
        (the same command proposes the same trials)."""
        import os
        import socket
        import zlib

        from hydra.utils import instantiate

        config = self.sampler_config
        if config is None:
            return None
        seed = config.get("seed")
        if seed is None or (held == 0 and not shared):
            return instantiate(config)
        # In a shared study, this command's own identity too: machine, process, folder.
        me = f"{socket.gethostname()}:{os.getpid()}:{folder.name}"
        shift = held + (zlib.crc32(me.encode()) if shared else 0)
        return instantiate(config, seed=(int(seed) + shift) % 2**32)

    def sweep(self, arguments: list[str]) -> None:
        from lenet_cli.errors import LenetError, Refused

        try:
            self._search(arguments)
        except LenetError as error:  # inside Hydra: lenet-train shows the panel (cli/app.py)
            raise Refused(error) from None

    def _search(self, arguments: list[str]) -> None:
        import optuna

        from lenet_cli.files import write_text_atomic
        from lenet_cli.sweeps import study as studies

        assert self.config is not None and self.launcher is not None
        folder = Path(str(self.config.hydra.sweep.dir))
        space = studies.SearchSpace(self.params or {}, arguments)  # refusals before any file
        storage = studies.open_storage(str(self.storage or folder / studies.JOURNAL_FILE))
        write_text_atomic(folder / "multirun.yaml", OmegaConf.to_yaml(self.config))
        study = optuna.create_study(  # or join it: another command, or an earlier run, made it
            storage=storage,
            study_name=self.study_name,
            direction=self.direction,
            load_if_exists=True,
        )
        sampler = self._sampler(studies.trials_held(study), bool(self.storage), folder)
        if sampler is not None:
            study.sampler = sampler
        told, failed = self._rerun_unfinished(study, space, folder)
        for number in studies.fail_abandoned(study, folder):
            log.warning("Trial %d was left running by a command that died: failed", number)
        self._fill_slots(study, space, folder, told, failed)
        self._save_best(study, folder)

    def _fill_slots(self, study, space, folder: Path, told: int, failed: int) -> None:
        """Run trials until the study holds n_trials, n_jobs of them at every moment: a slot
        freed by a finished, pruned or failed trial starts the next one at once (Hydra's
        launchers run one batch at a time, so each slot is a thread that launches one trial at
        a time). A launcher that runs jobs inside this process has one slot."""
        import threading
        from concurrent.futures import ThreadPoolExecutor

        from lenet_cli.sweeps.launch import runs_in_the_sweeps_process

        lock, stop, counts = threading.Lock(), threading.Event(), [told, failed]

        def slot() -> None:
            while not stop.is_set():
                with lock:  # one ask at a time, so that n_trials is never overshot here
                    job = self._next_trial(study, space, folder)
                if job is None:
                    return
                ok = self._run(study, job)[0]
                with lock:
                    counts[0], counts[1] = counts[0] + 1, counts[1] + (not ok)
                    if counts[1] and counts[1] / counts[0] > self.max_failure_rate:
                        if not stop.is_set():
                            log.warning(
                                "Stopping the search: %d of %d trials failed "
                                "(max_failure_rate=%s).", counts[1], counts[0],
                                self.max_failure_rate,
                            )  # fmt: skip
                        stop.set()

        in_process = runs_in_the_sweeps_process(self.config.hydra.launcher)
        slots = 1 if in_process else self.n_jobs
        if slots == 1:
            return slot()
        with ThreadPoolExecutor(slots, thread_name_prefix="trial-slot") as pool:
            futures = [pool.submit(slot) for _ in range(slots)]
            try:
                for future in futures:
                    future.result()
            except BaseException:  # Ctrl-C, or a slot's error: no slot starts another trial
                stop.set()
                raise

    def _next_trial(self, study, space, folder: Path):
        """Ask for the next trial and claim its job folder; None when the study is full."""
        from optuna.trial import TrialState

        from lenet_cli.sweeps import study as studies
        from lenet_cli.sweeps.launch import claim_jobs

        while studies.trials_held(study) < self.n_trials:
            trial = study.ask(space.distributions)
            if studies.over_limit(study, trial.number, self.n_trials):
                # Another command took the last place between our count and our ask.
                trial.set_user_attr(studies.NOT_RUN_ATTR, "the study already held n_trials")
                study.tell(trial, state=TrialState.FAIL)
                return None
            trial.set_user_attr(studies.FOLDER_ATTR, str(folder.resolve()))
            claimed = claim_jobs(self, [(trial.number, space.overrides(trial.params))], 1)[0]
            if claimed:
                return claimed
        return None

    def _rerun_unfinished(self, study, space, folder: Path) -> tuple[int, int]:
        """Trials this folder started and never told run again first, with their parameters and
        numbers (unless another live command on this folder runs one now: it is left to that
        one). Returns how many were told, and how many of those failed."""
        from lenet_cli.run_folder import RunFolder
        from lenet_cli.sweeps import study as studies
        from lenet_cli.sweeps.launch import claim_jobs, job_folder

        told = failed = 0
        for trial in studies.unfinished_trials(study, folder):
            job = (trial.number, space.overrides(trial.params))
            done = RunFolder(job_folder(self, job[1], trial.number))
            if done.state() == "finished":  # finished, but the command ended before telling
                tell_job(study, trial.number, done, done.metrics().get("val/acc_best"))
                continue
            claimed, _ = claim_jobs(self, [job], 1)
            if claimed:
                log.info("Trial %d was not finished: running it again", trial.number)
                ok = self._run(study, claimed)
                told, failed = told + 1, failed + (not ok[0])
        return told, failed

    def _run(self, study, batch) -> list[bool]:
        """Launch claimed trials (lenet_cli/sweeps/launch.py) and tell Optuna each result.
        Returns which trials completed."""
        from lenet_cli.sweeps.launch import launch_claimed

        returns = launch_claimed(self, batch)
        return [
            tell_result(study, n, run, job) for (n, _, run), job in zip(batch, returns, strict=True)
        ]

    def _save_best(self, study, folder: Path) -> None:
        from optuna.trial import TrialState

        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            return  # every trial failed: the sweep summary says why
        best = study.best_trial
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value,
                   "best_trial": best.number}  # fmt: skip
        OmegaConf.save(OmegaConf.create(results), folder / "optimization_results.yaml")


def tell_result(study, number: int, run, job) -> bool:
    """Tell Optuna a job's result: its value, pruned, or failed (lenet-train returns None for a
    failed job, see lenet_cli/sweeps/launch.py; a value that is not a finite number fails too)."""
    from optuna.trial import TrialState

    try:
        value = job.return_value  # re-raises an exception the job did not handle
    except Exception:  # HYDRA_FULL_ERROR=1 lets job errors through: stop here too
        study.tell(number, state=TrialState.FAIL)
        raise
    return tell_job(study, number, run, value)


def tell_job(study, number: int, run, value) -> bool:
    """Tell Optuna a trial's outcome from its run folder: PRUNED when its job stopped on the
    pruner's word (a pruned trial is no failure), else its value."""
    from optuna.trial import TrialState

    if run.status().get("status") == "pruned":
        study.tell(number, state=TrialState.PRUNED)
        return True
    return tell_value(study, number, value)


def tell_value(study, number: int, value) -> bool:
    """Tell Optuna a trial's value; one that is not a finite number is told as failed."""
    import math

    from optuna.trial import TrialState

    try:
        number_value = float(value)
    except (TypeError, ValueError):
        number_value = math.nan
    if not math.isfinite(number_value):
        study.tell(number, state=TrialState.FAIL)
        return False
    study.tell(number, number_value)
    return True
