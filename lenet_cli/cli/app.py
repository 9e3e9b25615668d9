"""Running a task function as a Hydra app, with lenet-cli's guarantees around it.

Before Hydra creates any folder, the command line is composed and validated (so a typo ends in a
short panel within a second, exit code 2, and leaves nothing behind), and the run folder is
claimed atomically so that two runs started in the same second never share it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lenet_cli.cluster import job_run_name, prepare_srun, srun_tasks
from lenet_cli.config import CONFIG_PATH, compose_checked, validate
from lenet_cli.errors import ConfigError, LenetError, Refused
from lenet_cli.overrides import first_of_each_sweep, given_value, merge_overrides, parse_args
from lenet_cli.run_folder import RunFolder, existing_job_folder
from lenet_cli.sweeps.ddp_job import hand_to_sweep, sweep_job
from lenet_cli.sweeps.launch import run_isolated, sweep_settings
from lenet_cli.sweeps.resume import is_sweep_folder, sweep_command
from lenet_cli.sweeps.study import absolute_storage_override

# Flags that only print something: no run, no folder, no pre-check needed (--help is answered
# by lenet_cli.cli.help before the pre-check; the others by Hydra).
INFO_FLAGS = ("help", "hydra_help", "info", "shell_completion")
RUN_DIR_ENV, SWEEP_DIR_ENV = "LENET_RUN_DIR", "LENET_SWEEP_DIR"
# A DDP child process (started by Lightning with LOCAL_RANK set) shares rank 0's folder and must
# not write a log or a .hydra/ of its own there (Lightning adds hydra.output_subdir=null).
CHILD_RANK_OVERRIDES = ["hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]


def external_launch() -> str | None:
    """The shared folder name when srun or torchrun started every process of a DDP run itself.

    Those processes start at once and cannot talk before torch.distributed is up, so all of them
    derive the same run folder from the launcher's job id instead of from the clock.
    """
    env = os.environ
    if srun_tasks() > 1:
        return job_run_name()
    if "TORCHELASTIC_RUN_ID" in env and int(env.get("WORLD_SIZE", "1")) > 1:
        if env["TORCHELASTIC_RUN_ID"] == "none":  # torchrun's default: the same for every run
            raise ConfigError(
                "Started by torchrun without a run id, so its processes cannot agree on a run "
                "folder (and every such run would share one).",
                fix="Add --standalone (one node) or --rdzv-id=<a new name per run> (several "
                "nodes) to the torchrun command.",
            )
        return f"torchrun-{env['TORCHELASTIC_RUN_ID']}"
    return None


def is_child_rank() -> bool:
    """True in every process of a distributed run but global rank 0 (Lightning, srun, torchrun)."""
    env = os.environ
    ranks = ("LOCAL_RANK", "NODE_RANK", "RANK") + (("SLURM_PROCID",) if external_launch() else ())
    return any(env.get(name, "0") != "0" for name in ranks)


def claim_folder(parent: Path, stamp: str) -> Path:
    """Create parent/stamp, or parent/stamp-2, -3... atomically: the folder is ours alone."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"Cannot create the output folder {parent}: {error.strerror}.",
            fix="Run from a folder you can write to, or set paths.output_root=/a/writable/folder.",
        ) from None
    for n in range(1, 1000):
        folder = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
        except OSError as error:
            raise ConfigError(
                f"Cannot write to the output folder {parent}: {error.strerror}.",
                fix="Set paths.output_root=/a/writable/folder.",
            ) from None
    raise ConfigError(f"Too many runs in {parent} in one second.", fix="Try again.")


def claim_run_folder(cfg: DictConfig, overrides: list[str], multirun: bool) -> RunFolder | None:
    """Claim this run's (or sweep's) folder and hand it to Hydra through the environment; a
    single run's folder is also claimed as this process's (lenet_cli/run_folder.py), which is
    returned.

    The environment, unlike the command line, is inherited by the DDP child processes that
    Lightning starts, so they resolve the same folder.
    """
    key, variable = (
        ("hydra.sweep.dir", SWEEP_DIR_ENV) if multirun else ("hydra.run.dir", RUN_DIR_ENV)
    )
    job = None if multirun else sweep_job()
    if job is not None:  # a sweep's DDP job (ddp_job.py) runs in its folder, on the job's claim
        os.environ[variable] = job["folder"]  # (the sweep's job releases it once this run ended)
        RunFolder(job["folder"]).adopt()
        return None
    given = given_value(overrides, key)
    if given:  # the user chose the folder
        return None if multirun else _claim(RunFolder(given))
    root = Path(str(cfg.paths.output_root))
    if multirun:
        root = root / "multirun"
    # A run inside a SLURM job is named after the job, so that a requeued job finds its folder
    # again (the one that ran the same command and did not finish).
    job = None if multirun else job_run_name()
    earlier = existing_job_folder(root, job, overrides) if job else None
    if earlier is not None:
        os.environ[variable] = str(earlier)
        return _claim(RunFolder(earlier))
    today = root / time.strftime("%Y-%m-%d")
    shared = external_launch()
    if shared:  # srun or torchrun: every rank computes the same name; rank 0 creates the folder
        os.environ[variable] = str(today / shared)
        return None
    # Claimed atomically: two runs never share a folder (two commands in one job: name, name-2).
    folder = claim_folder(today, job or time.strftime("%H-%M-%S"))
    os.environ[variable] = str(folder)
    return None if multirun else _claim(RunFolder(folder))


def _claim(run: RunFolder, only_read: bool = False) -> RunFolder | None:
    """This process's claim on a run folder; a panel when another live process holds it.
    only_read: the folder a resume reads (its own run goes elsewhere); one that cannot be written
    (another user's, an archive) is read without a claim."""
    try:
        owner = run.claim()
    except OSError as error:
        if only_read and run.out_of_space(error, "") is None:
            return None
        raise run.out_of_space(error, "the same command") or ConfigError(
            f"Cannot write to {run.path}: {error.strerror}.",
            fix="Run from a folder you can write to, or set paths.output_root=/a/writable/folder.",
        ) from None
    if owner is not None:
        raise ConfigError(
            run.busy_message(owner) + " Two commands in one run folder would overwrite each "
            "other's checkpoints and logs.",
            fix="Wait for it to end (or stop it), then run the command again.",
        )
    return run


def expand_resume(overrides: list[str], multirun: bool = False) -> list[str]:
    """`resume=<run folder>`: that run's overrides, then the user's, then its last.ckpt.
    `-m resume=<sweep folder>`: the sweep again, in its folder (lenet_cli/sweeps/resume.py)."""
    given = given_value(overrides, "resume")
    if given in (None, "null"):
        return overrides
    folder = Path(given)
    if multirun:
        return sweep_command(folder, overrides)
    if is_sweep_folder(folder):
        raise ConfigError(
            f"resume={folder} is a sweep folder.",
            fix=f"Resume the sweep with -m: lenet-train -m resume={folder}",
        )
    recorded = folder / ".hydra" / "overrides.yaml"
    if not recorded.is_file():
        raise ConfigError(
            f"resume={folder}: no run to resume there (need .hydra/overrides.yaml).",
            fix="Give a run folder printed by lenet-train (outputs/<date>/<time>), or pass "
            "ckpt_path=<file.ckpt> with the original overrides.",
        )
    from omegaconf import OmegaConf

    skip = ("ckpt_path=", "resume=")
    written = OmegaConf.to_container(OmegaConf.load(recorded), resolve=False)  # ${...} as written
    original = [str(o) for o in written if o != "resume=null"]
    # resume= itself is not passed on: ckpt_path records (and links to) the run resumed. A run
    # stopped before its first checkpoint starts again from what it was started from.
    last = RunFolder(folder).last_checkpoint
    mine = [o for o in overrides if not o.startswith(skip)]
    if last.is_file():
        original = [o for o in original if not o.startswith(skip)]
        mine.append(f"ckpt_path={last}")
    return merge_overrides(original, mine)


def _flags_only(argv: list[str], overrides: list[str]) -> list[str]:
    """The command line without its overrides, which may come before, between or after flags
    (`lenet-train model=modern --cfg job` as well as `lenet-train --cfg job model=modern`)."""
    rest, flags = list(overrides), []
    for token in argv:
        if rest and token == rest[0]:
            rest.pop(0)
        else:
            flags.append(token)
    return flags


def _overrides_of_one_run(args) -> tuple[list[str], list[str]]:
    """The overrides with resume= expanded, and those of one run (a sweep's first job)."""
    overrides = expand_resume(list(args.overrides), args.multirun)
    return overrides, (first_of_each_sweep(overrides) if args.multirun else overrides)


@dataclass
class Prechecked:
    """What the pre-check leaves to the run: the run folders this process claimed (its own, the
    one it resumes), and check_run's result, so that a single run is not checked twice."""

    held: list[RunFolder | None] = field(default_factory=list)
    checked: tuple[Any] | None = None  # (check_run's result,) once it ran

    def release(self) -> None:
        for run in self.held:
            if run is not None:
                run.release()


def precheck(
    config_name: str,
    argv: list[str],
    check_run: Callable[[DictConfig], Any] | None,
    state: Prechecked | None = None,
) -> list[str]:
    """Compose and validate what Hydra will run; return the command line to hand to Hydra."""
    state = Prechecked() if state is None else state
    args = parse_args(argv)
    if any(getattr(args, flag, False) for flag in INFO_FLAGS):
        return argv
    flags = _flags_only(argv, args.overrides)
    overrides, composed = _overrides_of_one_run(args)
    cfg = compose_checked(config_name, composed)
    validate(cfg)
    if "trainer" in cfg and not args.multirun:
        prepare_srun(cfg.trainer)  # srun -n N: the tasks per node, for Lightning
    if is_child_rank():
        if external_launch():
            claim_run_folder(cfg, overrides, args.multirun)
        return [*flags, *overrides, *CHILD_RANK_OVERRIDES]
    if args.cfg:
        if args.multirun:  # Hydra refuses the pair with a traceback
            raise ConfigError(
                "--cfg shows one job's config, and -m asks for a sweep.",
                fix="Leave out -m to see the first job's config (give one value per key), "
                "or run the sweep without --cfg.",
            )
        return [*flags, *overrides]
    # Job folder names, and the launcher checked; a sweep's DDP job (ddp_job.py) was, by its sweep.
    alone = sweep_job() is not None and not args.multirun
    sweep = [] if alone else sweep_settings(cfg, overrides, args.multirun)
    if check_run is not None and not args.multirun:
        state.checked = (check_run(cfg),)
    resumed = given_value(args.overrides, "resume")
    if resumed not in (None, "null") and not args.multirun:  # one command continues a run
        state.held.append(_claim(RunFolder(resumed), only_read=True))
    state.held.append(claim_run_folder(cfg, overrides, args.multirun))
    if args.multirun:  # recorded in multirun.yaml: a resume started elsewhere finds the study
        overrides = [absolute_storage_override(o) for o in overrides]
    return [*flags, *overrides, *sweep]


def exit_with(error: LenetError) -> None:
    """The short panel and the exit code; the traceback too when HYDRA_FULL_ERROR=1 asks for it."""
    from lenet_cli.console import print_error

    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        import traceback

        traceback.print_exception(error)
    # A sweep's DDP job hands its error to the sweep, which shows it (lenet_cli/sweeps/ddp_job.py).
    if not hand_to_sweep(error, is_child_rank()) and not (error.every_rank and is_child_rank()):
        print_error(error)
    from lenet_cli.cli.process import exit_quickly

    exit_quickly(error.exit_code)  # effective only where the command asked for it (run_app)
    sys.exit(error.exit_code)


def run_app(
    task: Callable[[DictConfig, tuple[Any] | None], Any],
    config_name: str,
    check_run: Callable[[DictConfig], Any] | None = None,
    tune_process: bool = False,
) -> None:
    """Entry point body of a lenet-cli Hydra command (lenet-train, lenet-eval). A single run's
    task gets check_run's result from the pre-check (`task(cfg, (result,))`); a sweep's jobs,
    each with a config of its own, get None and check themselves.

    tune_process: apply the process-wide settings of lenet_cli/cli/process.py (the console
    command's own process only; the task function itself never does): allocator and CUDA-check
    settings before the task runs, and an exit without the interpreter's teardown after success.
    """
    if tune_process:
        from lenet_cli.cli.process import skip_teardown_at_exit

        skip_teardown_at_exit()
    state = Prechecked()
    try:
        args = parse_args(sys.argv[1:])
        if args.help:  # ours: Hydra's lists its config groups at about a second's cost
            from lenet_cli.cli.help import help_text

            print(help_text(config_name, _overrides_of_one_run(args)[1], resolve=args.resolve))
            return
        sys.argv[1:] = precheck(config_name, sys.argv[1:], check_run, state)
    except LenetError as error:
        state.release()
        exit_with(error)
    _run_hydra(task, config_name, state, tune_process, args.multirun)


def _run_hydra(
    task: Callable[[DictConfig, tuple[Any] | None], Any],
    config_name: str,
    state: Prechecked,
    tune_process: bool,
    multirun: bool,
) -> None:
    """hydra.main around the task; panels for errors raised inside Hydra; the exit code."""
    import hydra

    if multirun:  # SIGTERM between two jobs: the resume panel, as for Ctrl-C (during a job,
        signal.signal(signal.SIGTERM, _stop_sweep)  # training's own handler takes it)
    # A log line that cannot be written (a full disk) is dropped, not printed with a traceback:
    # the failure that matters reaches its panel through the write that raised it.
    logging.raiseExceptions = False

    def job(cfg: DictConfig) -> Any:
        from hydra.core.hydra_config import HydraConfig

        if tune_process:
            from lenet_cli.cli.process import tune_process as apply_settings

            apply_settings(cfg.trainer.get("strategy"))
        if HydraConfig.get().mode.name == "MULTIRUN":
            return run_isolated(task, cfg)  # a failed job is recorded and the sweep goes on
        try:
            return task(cfg, state.checked)
        except LenetError as error:
            exit_with(error)
        except OSError as error:  # a full disk: the panel, and how to continue once there is room
            from lenet_cli.console import short_path

            again = f"lenet-{config_name} resume={short_path(cfg.paths.output_dir)}"
            full = RunFolder(cfg.paths.output_dir).out_of_space(error, again)
            if full is None:
                raise
            exit_with(full)

    try:
        hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)(job)()
    except Refused as refused:  # refused inside Hydra (a launcher): the panel all the same
        exit_with(refused.error)
    except KeyboardInterrupt:  # Ctrl-C outside training (which stops with its own panel)
        exit_with(_interrupted(multirun))
    finally:
        state.release()
        _remove_if_empty(os.environ.get(RUN_DIR_ENV) or os.environ.get(SWEEP_DIR_ENV))
    from lenet_cli.cli.process import exit_quickly

    code = 1 if multirun and _sweep_failed() else 0
    exit_quickly(code)
    if code:
        sys.exit(code)


def _stop_sweep(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _interrupted(multirun: bool) -> LenetError:
    from lenet_cli.errors import Interrupted
    from lenet_cli.sweeps.launch import sweep_interrupted

    if not multirun:
        return Interrupted("Stopped by Ctrl-C.")
    return sweep_interrupted(folder=_sweep_folder())


def _sweep_failed() -> bool:
    """Whether the sweep just run lists a failed job (its exit code is then 1)."""
    from lenet_cli.sweeps.summary import read_sweep

    folder = _sweep_folder()
    return bool(folder) and Path(folder).is_dir() and bool(read_sweep(Path(folder)).failed)


def _sweep_folder() -> str | None:
    """The folder of the sweep this command runs: given, or claimed by the pre-check."""
    return given_value(sys.argv[1:], "hydra.sweep.dir") or os.environ.get(SWEEP_DIR_ENV)


def _remove_if_empty(folder: str | None) -> None:
    """A run that failed before writing anything leaves no empty folder behind."""
    if folder and not is_child_rank():
        try:
            Path(folder).rmdir()  # only succeeds when empty
        except OSError:
            pass
