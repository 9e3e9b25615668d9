"""What lenet-cli adds to a Hydra multirun: its settings checked before Hydra starts, job folders
named by their overrides and launched only by the command that claims them (both sweepers in
hydra_plugins/), and each job run so that its outcome is recorded and a failure ends only it."""

from __future__ import annotations

import gc
import itertools
import logging
import os
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.errors import InstantiationException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from lenet_cli.console import console, err_console, print_error, short_path
from lenet_cli.errors import ConfigError, Interrupted, LenetError, Refused
from lenet_cli.run_folder import STATUS_FILE, Owner, RunFolder
from lenet_cli.sweeps.ddp_job import run_apart, runs_apart
from lenet_cli.sweeps.study import check_storage_secret, open_storage, prunes
from lenet_cli.sweeps.summary import job_line

THREADS_ENV = "LENET_THREADS_PER_JOB"
MAX_NAME = 200  # longest job folder name built from overrides (file systems stop at 255 bytes)
FLOAT_CHARS = 22  # characters a sampled float such as 0.0012345678901234567 takes in a name
EXCLUDE_KEYS = "hydra.job.config.override_dirname.exclude_keys"


def sweep_settings(cfg: DictConfig, overrides: list[str], multirun: bool) -> list[str]:
    """Check a sweep's launcher, search and pruner before any folder exists; return the Hydra
    overrides that name its job folders. `cfg`: the first job's config, with Hydra's settings."""
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=False)  # ${oc.env:...} as written
    optuna = "optuna" in str(sweeper.get("_target_", "")).lower()
    pruner = OmegaConf.select(cfg, "hydra.sweeper.pruner", default=None)
    if prunes(pruner) and not (optuna and multirun):
        raise ConfigError(
            "A pruner stops the hopeless trials of an Optuna search, and this command runs none.",
            fix="lenet-train -m hparams_search=optuna hydra/sweeper/pruner=median",
        )
    if prunes(pruner):  # its settings, tried before any job runs
        try:
            instantiate(pruner)
        except InstantiationException as error:
            said = str(error).splitlines()  # "Error in call to target ...", the error, full_key
            raise ConfigError(
                f"hydra.sweeper.pruner: {one_line(said[1] if len(said) > 2 else said[0])}",
                fix="See Optuna's pruners for the settings each takes (docs/sweeps.md, Pruning).",
            ) from None
    if not multirun:
        if optuna:
            raise ConfigError(
                "hparams_search=optuna runs a search of many jobs, so it needs -m (multirun).",
                fix="lenet-train -m hparams_search=optuna hydra.sweeper.n_trials=30",
            )
        return []
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    threads_per_job(launcher, available_cores(), os.environ)  # a bad LENET_THREADS_PER_JOB: now
    if str(launcher.get("_target_", "")).endswith("SlurmLauncher") and not shutil.which("sbatch"):
        raise ConfigError(
            "The SLURM launcher needs SLURM's sbatch, and it is not on this machine's PATH.",
            fix="Start the sweep on the cluster's login node, or try it here with "
            "hydra/launcher=submitit_local (or hydra/launcher=joblib).",
        )
    if optuna:
        try:
            storage = OmegaConf.select(cfg, "hydra.sweeper.storage")
        except OmegaConfBaseException as error:  # ${oc.env:...} of a variable that is not set
            raise ConfigError(
                f"hydra.sweeper.storage cannot be resolved: {str(error).splitlines()[0]}",
                fix="Export the environment variable it names, then run the command again.",
            ) from None
        # A storage given is opened now: a wrong URL or a missing database driver is a panel
        # before any job runs (the default, in the sweep folder, always opens).
        if storage is not None:
            check_storage_secret(sweeper.get("storage"))
            open_storage(str(storage))
    return job_folder_overrides(overrides, sweeper.get("params") or {})


def job_folder_overrides(overrides: Iterable[str], sweeper_params: Mapping[str, str]) -> list[str]:
    """Hydra overrides that name each job folder <number>_<its overrides that vary>: Hydra's
    override_dirname less the overrides given once (the same in every job) and those with a '/'
    (it would nest folders); just the number when nothing is left or the name is too long."""
    parse = OverridesParser.create().parse_overrides
    parsed = parse(list(overrides))
    if {o.key_or_group for o in parsed} & {"hydra.sweep.subdir", EXCLUDE_KEYS}:
        return []  # the user names the folders
    on_command_line = [o for o in parsed if not o.is_hydra_override()]
    fixed = [o.key_or_group for o in on_command_line if not o.is_sweep_override()]
    searched = parse([f"{key}={spec}" for key, spec in sweeper_params.items()])
    swept = [o for o in on_command_line if o.is_sweep_override()]
    swept += [o for o in searched if o.key_or_group not in fixed]
    widths: dict[str, int] = {}
    slashed: list[str] = []
    for override in swept:
        key = override.key_or_group
        if not override.is_sweep_override():
            values = [override.get_value_element_as_str()]
        elif override.is_discrete_sweep() and override.value_type.name != "GLOB_CHOICE_SWEEP":
            values = list(override.sweep_string_iterator())
        else:  # an interval to sample from, or a glob over config options: not known yet
            values = []
        if any("/" in v for v in values):
            slashed.append(key)
        else:
            widths[key] = max(widths.get(key, 0), max(map(len, values), default=FLOAT_CHARS))
    length = sum(len(key) + 2 + width for key, width in widths.items())
    if not widths or length > MAX_NAME:
        return ["hydra.sweep.subdir=${hydra.job.num}"]
    excluded = ",".join(f"'{key}'" for key in dict.fromkeys([*fixed, *slashed]))
    return [f"{EXCLUDE_KEYS}=[{excluded}]"]


def available_cores() -> int:
    """CPU cores this process may use (the affinity mask a scheduler set, else all of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_job(launcher: Mapping[str, Any], cores: int, env: Mapping[str, str]) -> int | None:
    """Torch threads for one job, so that (jobs running at once) x threads <= cores; None keeps
    torch's default (jobs that run one after the other). LENET_THREADS_PER_JOB wins when set."""
    given = env.get(THREADS_ENV)
    if given:
        if not given.strip().isdigit() or int(given) < 1:
            raise ConfigError(
                f"{THREADS_ENV}={given!r} is not a positive integer.",
                fix=f"Set it to the torch threads each job may use, e.g. {THREADS_ENV}=2.",
            )
        return int(given)
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        return max(1, cores // jobs_at_once(launcher, cores))
    if "submitit" in target or target.endswith("SlurmLauncher"):  # ours: lenet_cli_slurm
        cpus = launcher.get("cpus_per_task")
        if isinstance(cpus, int) and cpus >= 1:
            return cpus
        return 1 if target.endswith("LocalLauncher") else None  # local jobs all start at once
    return None


def jobs_at_once(launcher: Mapping[str, Any], cores: int) -> int | None:
    """Jobs the launcher runs at once: joblib's n_jobs (-1: every core), one for the basic
    launcher (in this process); None for submitit and SLURM, which queue every job at once."""
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        n_jobs = int(launcher.get("n_jobs") or 1)
        return max(1, cores + 1 + n_jobs if n_jobs < 0 else n_jobs)
    return None if "submitit" in target or target.endswith("SlurmLauncher") else 1


def one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def run_isolated(task: Callable[[DictConfig, Any], Any], cfg: DictConfig) -> Any:
    """Run one job of a multirun so that its failure is recorded (job_status.json) instead of
    ending the sweep: a failed job returns None, a failed trial for the Optuna sweeper. The job's
    process takes over the claim on its folder (a joblib worker or a SLURM job lives as long)."""
    hydra_cfg = HydraConfig.get()
    run = RunFolder(hydra_cfg.runtime.output_dir)
    run.adopt()
    status: dict[str, Any] = {"job": hydra_cfg.job.num, "status": "ok"}
    start = time.perf_counter()
    try:
        try:
            threads = threads_per_job(hydra_cfg.launcher, available_cores(), os.environ)
            if threads is not None:  # jobs share the machine
                import torch

                torch.set_num_threads(threads)
                status["torch_threads"] = threads
            # DDP: a run of its own in the job's folder (ddp_job.py); each job checks its config.
            value = run_apart(task, cfg, hydra_cfg, threads) if runs_apart(cfg) else task(cfg, None)
            if pruned := run.metrics().get("pruned_epoch"):  # lenet_cli/sweeps/pruning.py
                status.update(status="pruned", reason=f"pruned after epoch {pruned}")
        except Exception as error:
            value = None
            status.update(_failure(error, run, hydra_cfg))  # or raises: the job or sweep stops
        status["seconds"] = round(time.perf_counter() - start, 3)
        run.record(status)
        return value
    finally:
        run.release()  # the job ended, whatever the outcome (a restarted SLURM job claims again)
        _free_finished_job()


def _free_finished_job() -> None:
    """A job's Trainer, LightningModule and DataModule refer to one another: only the cycle
    collector frees them, every 5-10 jobs on its own (scripts/bench.py --only sweep). What
    survives the first job (imported modules) is frozen out of later, ms-long collections."""
    gc.collect()
    if gc.get_freeze_count() == 0:
        gc.freeze()


def runs_in_the_sweeps_process(launcher: Any) -> bool:
    """Whether jobs run in the sweep's process (Hydra's basic launcher): stopping one stops it."""
    return str(launcher.get("_target_", "")).endswith("BasicLauncher")


def sweep_interrupted(folder: Any = None, job: int | None = None) -> LenetError:
    """The panel of a stopped sweep: what is kept, and the command that continues it."""
    if not folder:
        return Interrupted("The sweep was stopped before its folder existed.")
    where = "" if job is None else f" during job {job}"
    return Interrupted(
        f"The sweep was stopped{where}. Finished jobs keep their results; an interrupted job "
        "continues from its last.ckpt.\n\n"
        f"Resume the sweep with:\n  lenet-train -m resume={short_path(str(folder))}"
    )


def _failure(error: Exception, run: RunFolder, hydra_cfg: Any) -> dict[str, Any]:
    """What job_status.json records about a failed job, shown as a panel; raises instead where
    the job (a SLURM restart) or the sweep (a full disk, the user's Ctrl-C) stops."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    if getattr(error, "restarting", False):
        # SLURM is starting this job again (requeue, preemption): it ends without a result,
        # so that submitit waits for the restart, which continues from last.ckpt.
        logging.getLogger(__name__).warning("%s (the job restarts)", one_line(str(error), 500))
        raise SystemExit(error.exit_code) from None
    resume = f"lenet-train -m resume={short_path(hydra_cfg.sweep.dir)}"
    full = run.out_of_space(error, resume) if isinstance(error, OSError) else None
    if full is not None:  # the next jobs would fail the same way: the sweep stops
        raise Refused(full) from None
    if isinstance(error, Interrupted):  # Ctrl-C or SIGTERM: resumable from last.ckpt
        stopped = {"status": "interrupted", "reason": one_line(error.message)}
        # A job of its own (joblib worker, SLURM job) stopped from outside: the others go on.
        if not runs_in_the_sweeps_process(hydra_cfg.launcher):
            return stopped
        run.record({"job": hydra_cfg.job.num, **stopped})  # the user's Ctrl-C: the sweep stops
        raise Refused(sweep_interrupted(hydra_cfg.sweep.dir, hydra_cfg.job.num)) from None
    chain = [error]  # the LenetError behind it (Hydra's instantiate wraps errors in targets)
    while chain[-1] is not None and len(chain) < 10:  # a chain can loop: look 10 deep at most
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    known = next((e for e in chain if isinstance(e, LenetError)), None)
    reason = one_line(known.message if known else f"{type(error).__name__}: {error}")
    record: dict[str, Any] = {"status": "failed", "reason": reason}
    if known is None:  # an unexpected error: keep its traceback for the bug report
        record["traceback"] = traceback.format_exc()
        known = LenetError(
            reason,
            fix=f"The traceback is in {run.path / STATUS_FILE}. To see it live, run this job "
            "alone with HYDRA_FULL_ERROR=1.",
        )
    which = hydra_cfg.job.override_dirname or " ".join(hydra_cfg.overrides.task)
    err_console.print(f"[bold red]job {hydra_cfg.job.num} failed[/] ({which}); the sweep goes on")
    print_error(known)
    return record


class ClaimingSweeper(Sweeper):
    """What lenet-cli's two sweepers (hydra_plugins/lenet_cli_grid, lenet_cli_optuna) share:
    Hydra's configured launcher, through which they launch the jobs they claim."""

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        if runs_in_the_sweeps_process(config.hydra.launcher):
            loader = ComposedOnce(hydra_context.config_loader)
            hydra_context = HydraContext(config_loader=loader, callbacks=hydra_context.callbacks)
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )


class ComposedOnce:
    """The config loader of a sweep whose launcher runs the jobs in this process (one at a time):
    it hands the launcher the job config that job_folder composed last (Hydra's launchers compose
    each job again, ~0.1 s, and none takes a composed config). The rest is Hydra's loader."""

    def __init__(self, loader: Any) -> None:
        self.loader, self.last = loader, (None, None)

    def load_sweep_config(self, master: DictConfig, overrides: list[str]) -> DictConfig:
        (key, cfg), self.last = self.last, (None, None)
        return cfg if key == tuple(overrides) else self.loader.load_sweep_config(master, overrides)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # copy and pickle probe an object made without __init__
            raise AttributeError(name)
        return getattr(self.loader, name)


def job_folder(sweeper: Any, overrides: Sequence[str], num: int) -> Path:
    """The folder a launcher gives job `num`: hydra.sweep.dir/subdir, composed as launchers do."""
    loader = sweeper.hydra_context.config_loader
    cfg = loader.load_sweep_config(sweeper.config, list(overrides))
    with open_dict(cfg):
        cfg.hydra.job.num = cfg.hydra.job.id = num
    if isinstance(loader, ComposedOnce):  # for the job's launch
        loader.last = (tuple(overrides), cfg)
    return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)


def claim(run: RunFolder, resume: str, fix: str) -> Owner | None:
    """run.claim(), or a panel (Refused, past Hydra's `except Exception`) when it cannot write."""
    try:
        return run.claim()
    except OSError as error:
        cannot = ConfigError(f"Cannot write to {short_path(run.path)}: {error.strerror}.", fix=fix)
        raise Refused(run.out_of_space(error, resume) or cannot) from None


Job = tuple[int, list[str]]  # a job's number and its overrides
Claimed = tuple[int, list[str], RunFolder]  # and the folder it claimed


def claim_jobs(sweeper: Any, pending: Sequence[Job], size: int) -> tuple[list[Claimed], list[Job]]:
    """Claim up to `size` of the pending jobs, in order; returns them and the jobs after them.
    A finished job is reported and dropped, one that another live process runs is left to it."""
    sweep_folder = Path(str(sweeper.config.hydra.sweep.dir))
    resume = f"lenet-train -m resume={short_path(sweep_folder)}"
    fix = "Give the sweep a folder you can write to: hydra.sweep.dir=/a/writable/folder."
    claimed = []
    for index, (num, overrides) in enumerate(pending):
        if len(claimed) == size:
            return claimed, list(pending[index:])
        run = RunFolder(job_folder(sweeper, overrides, num))
        owner = None if run.state() == "finished" else claim(run, resume, fix)
        if owner is not None:
            console.print(f"job {num}: {run.busy_message(owner)}", highlight=False)
        elif run.state() == "finished":  # before this command, or by another one meanwhile
            run.release()  # a claim just taken (release leaves any other live owner's alone)
            console.print(job_line(sweep_folder, run.path, None, reused=True), highlight=False)
        else:
            claimed.append((num, list(overrides), run))
    return claimed, []


def launch_claimed(sweeper: Any, jobs: Sequence[Claimed]) -> list:
    """Launch claimed jobs (one launch per run of consecutive numbers: a launcher numbers the
    jobs of one launch from initial_job_idx) and give their claims up when they end."""
    returns = []
    try:  # in a run of consecutive numbers, number - position is the same for every job
        for _, consecutive in itertools.groupby(enumerate(jobs), lambda job: job[1][0] - job[0]):
            nums, overrides, _ = zip(*(job for _, job in consecutive), strict=True)
            returns += sweeper.launcher.launch(list(overrides), initial_job_idx=nums[0])
    finally:
        for _, _, folder in jobs:
            folder.release()
    return returns


def fill_slots(
    sweeper: Any,
    slots: int,
    next_job: Callable[[], Claimed | None],
    ended: Callable[[Claimed, Any], bool],
) -> None:
    """Launch jobs until next_job() has none, `slots` of them at every moment. Hydra's launchers
    run one batch at a time (a freed slot waits for the batch's slowest job), so each slot is a
    thread that launches one job at a time and takes the next as soon as it ends; ended(job, its
    JobReturn) returning False stops every slot. One slot runs in the main thread."""
    lock, stop, errors = threading.Lock(), threading.Event(), []

    def slot() -> None:
        try:
            while not stop.is_set():
                with lock:  # one claim (or ask) at a time
                    job = next_job()
                if job is None:
                    return
                result = launch_claimed(sweeper, [job])[0]
                with lock:
                    if not ended(job, result):
                        stop.set()
        except BaseException as error:  # a slot's error (Ctrl-C included) ends the sweep
            errors.append(error)
            stop.set()

    if slots <= 1:
        slot()  # in the main thread, where signals arrive
    else:
        # Daemon threads: Ctrl-C or SIGTERM interrupts join(), and the sweep stops at once with
        # its panel, the running jobs left to a resume (a trial stays RUNNING in its study).
        threads = [threading.Thread(target=slot, daemon=True) for _ in range(slots)]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        finally:
            stop.set()  # no slot starts another job
    if errors:
        raise errors[0]
