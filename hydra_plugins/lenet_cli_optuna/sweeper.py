"""`hparams_search=optuna`: an Optuna search whose study lives on disk (optuna.journal in the
sweep folder, or hydra.sweeper.storage), can be resumed and shared by several commands: it asks
for trials until the study holds n_trials (finished, failed or running), each run as a Hydra job
numbered by its trial number. Why not hydra-optuna-sweeper: docs/sweeps.md."""

import logging
import math
import os
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf

from lenet_cli.errors import LenetError, Refused
from lenet_cli.files import write_text_atomic
from lenet_cli.run_folder import RunFolder
from lenet_cli.sweeps import launch
from lenet_cli.sweeps import study as studies

log = logging.getLogger(__name__)


# A dataclass, so no `from __future__ import annotations` here (Hydra's plugin scan breaks it).
@dataclass
class OptunaSweeper(launch.ClaimingSweeper):
    sampler: Any = None  # a config: seeded per command (_set_sampler)
    direction: str = "maximize"
    study_name: str = "lenet"
    storage: str | None = None
    n_trials: int = 20
    n_jobs: int = 1
    max_failure_rate: float = 1.0
    params: Any = None
    pruner: Any = None  # read by each job, which reports to its trial (sweeps/pruning.py)

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        folder = Path(str(self.config.hydra.sweep.dir))
        try:
            space = studies.SearchSpace(self.params or {}, arguments)  # refusals before any file
            storage = studies.open_storage(str(self.storage or folder / studies.JOURNAL_FILE))
            write_text_atomic(folder / "multirun.yaml", OmegaConf.to_yaml(self.config))
            study = optuna.create_study(  # or join it: another command, or an earlier run, made it
                storage=storage,
                study_name=str(self.study_name),  # digits: still a name
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
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        results["best_trial"] = best.number
        OmegaConf.save(OmegaConf.create(results), folder / "optimization_results.yaml")

    def _set_sampler(self, study, folder: Path) -> None:
        """A seeded sampler is seeded anew for each command that joins a study, from the trials
        it holds (and, for a shared study, this command's host, process and folder): else a resumed
        search or a second worker would propose the very trials the first one proposed."""
        config, held, shared = self.sampler, studies.trials_held(study), bool(self.storage)
        seed = None if config is None else config.get("seed")
        if seed is not None and (held or shared):
            me = f"{socket.gethostname()}:{os.getpid()}:{folder.name}"
            shift = held + (zlib.crc32(me.encode()) if shared else 0)
            study.sampler = instantiate(config, seed=(int(seed) + shift) % 2**32)
        elif config is not None:  # else Optuna's default
            study.sampler = instantiate(config)

    def _fill_slots(self, study, space, folder: Path, unfinished: list) -> None:
        """Run trials until the study holds n_trials, n_jobs at every moment (a launcher that
        runs jobs in this process: one); stop when more than max_failure_rate of them failed."""
        outcomes = []

        def ended(job, result) -> bool:
            outcomes.append(tell_result(study, job[0], job[2], result))
            failed, told = outcomes.count(False), len(outcomes)
            if outcomes[-1] or failed / told <= self.max_failure_rate:
                return True
            log.warning(
                f"Stopping the search: {failed} of {told} trials failed "
                f"(max_failure_rate={self.max_failure_rate})."
            )
            return False

        in_process = launch.runs_in_the_sweeps_process(self.config.hydra.launcher)
        next_trial = lambda: self._next_trial(study, space, folder, unfinished)
        launch.fill_slots(self, 1 if in_process else self.n_jobs, next_trial, ended)

    def _next_trial(self, study, space, folder: Path, unfinished: list):
        """The next trial to run, its job folder claimed (None: none is left): first those this
        folder left unfinished (unless another live command runs it), then new ones to n_trials."""
        from optuna.trial import TrialState

        while unfinished:
            trial = unfinished.pop(0)
            job = (trial.number, space.overrides(trial.params))
            run = RunFolder(launch.job_folder(self, job[1], trial.number))
            if run.state() == "finished":  # finished, but the command ended before telling
                tell_result(study, trial.number, run)
            elif claimed := launch.claim_jobs(self, [job], 1)[0]:
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
            job = (trial.number, space.overrides(trial.params))
            if claimed := launch.claim_jobs(self, [job], 1)[0]:
                return claimed[0]
            # Its job folder is finished or busy (a study renamed or deleted on an old folder):
            # the trial cannot run here, and must not be held RUNNING for ever.
            trial.set_user_attr(studies.NOT_RUN_ATTR, "its job folder was taken")
            study.tell(trial, state=TrialState.FAIL)
        return None


def tell_result(study, number: int, run: RunFolder, job: Any = None) -> bool:
    """Tell Optuna a trial's outcome, its job's value (or with no job its run folder's): one that
    is not a finite number fails it. Whether the trial did not fail (a pruned trial did not)."""
    from optuna.trial import TrialState

    try:  # job.return_value re-raises an exception the job did not handle
        value = run.metrics().get("val/acc_best") if job is None else job.return_value
    except Exception:  # HYDRA_FULL_ERROR=1 lets job errors through: stop here too
        study.tell(number, state=TrialState.FAIL)
        raise
    status = run.status().get("status")
    if status == "pruned":
        study.tell(number, state=TrialState.PRUNED)
    if status in ("pruned", "interrupted"):  # interrupted: stopped from outside, with its
        return True  # last.ckpt: left RUNNING, so that `-m resume=` continues it (left_running)
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    study.tell(number, value if ok else None, state=None if ok else TrialState.FAIL)
    return ok
