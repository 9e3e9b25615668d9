"""A task function run as a Hydra app. Before Hydra creates any folder, the command line is
composed and validated (a typo: a short panel within a second, exit code 2, nothing left behind)
and the run folder is claimed atomically (two runs started in one second never share it)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lenet_cli.cli import process
from lenet_cli.cli.help import help_text
from lenet_cli.cluster import job_run_name, prepare_srun, srun_tasks
from lenet_cli.config import CONFIG_PATH, compose_checked, validate
from lenet_cli.console import print_error, short_path
from lenet_cli.errors import ConfigError, DiskFull, Interrupted, LenetError, Refused
from lenet_cli.overrides import first_of_each_sweep, given_value, merge_overrides, parse_args
from lenet_cli.run_folder import RunFolder, existing_job_folder
from lenet_cli.sweeps.ddp_job import hand_to_sweep, sweep_job
from lenet_cli.sweeps.launch import claim, run_isolated, sweep_interrupted, sweep_settings
from lenet_cli.sweeps.resume import is_sweep_folder, sweep_command
from lenet_cli.sweeps.study import absolute_storage_override
from lenet_cli.sweeps.summary import read_sweep

RUN_DIR_ENV, SWEEP_DIR_ENV = "LENET_RUN_DIR", "LENET_SWEEP_DIR"
# A DDP child process (started by Lightning with LOCAL_RANK set) shares rank 0's folder and must
# not write a log or a .hydra/ of its own there (Lightning adds hydra.output_subdir=null).
CHILD_RANK_OVERRIDES = ["hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
WRITABLE = "Run from a folder you can write to, or set paths.output_root=/a/writable/folder."


def external_launch() -> str | None:
    """The shared folder name when srun or torchrun started every process of a DDP run: they
    cannot talk before torch.distributed is up, so each derives it from the launcher's job id."""
    if srun_tasks() > 1:
        return job_run_name()
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if run_id == "none":  # torchrun's default: the same for every run
            raise ConfigError(
                "Started by torchrun without a run id, so its processes cannot agree on a run "
                "folder (and every such run would share one).",
                fix="Add --standalone (one node) or --rdzv-id=<a new name per run> (several "
                "nodes) to the torchrun command.",
            )
        return f"torchrun-{run_id}"
    return None


def is_child_rank() -> bool:
    """True in every process of a distributed run but global rank 0 (Lightning, srun, torchrun)."""
    ranks = ("LOCAL_RANK", "NODE_RANK", "RANK") + (("SLURM_PROCID",) if srun_tasks() > 1 else ())
    return any(os.environ.get(name, "0") != "0" for name in ranks)


def claim_folder(parent: Path, stamp: str) -> Path:
    """Create parent/stamp, or parent/stamp-2, -3... atomically: the folder is ours alone."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            with contextlib.suppress(FileExistsError):
                folder = parent / (stamp if n == 1 else f"{stamp}-{n}")
                folder.mkdir()
                return folder
    except OSError as error:
        raise ConfigError(
            f"Cannot write to the output folder {parent}: {error.strerror}.", fix=WRITABLE
        ) from None
    raise ConfigError(f"Too many runs in {parent} in one second.", fix="Try again.")


def claim_run_folder(cfg: DictConfig, overrides: list[str], multirun: bool) -> RunFolder | None:
    """Claim this run's (or sweep's) folder and name it to Hydra in the environment (which the
    DDP processes Lightning starts inherit, unlike the command line); return a run's claim."""
    given = given_value(overrides, "hydra.sweep.dir" if multirun else "hydra.run.dir")
    if given:  # the user chose the folder (srun, torchrun: rank 0 claims it for all)
        return None if multirun or is_child_rank() else _claim(RunFolder(given))
    root = Path(str(cfg.paths.output_root)) / ("multirun" if multirun else "")
    # In a SLURM job, a run is named after the job: a requeued job finds its unfinished run again.
    job = None if multirun else job_run_name()
    folder = existing_job_folder(root, job, overrides) if job else None
    # srun or torchrun: every rank computes the same name; rank 0 creates the folder.
    shared = None if folder else external_launch()
    today = root / time.strftime("%Y-%m-%d")
    if folder is None:  # claimed atomically (two commands in one job: name, name-2)
        folder = today / shared if shared else claim_folder(today, job or time.strftime("%H-%M-%S"))
    os.environ[SWEEP_DIR_ENV if multirun else RUN_DIR_ENV] = str(folder)
    return None if multirun or shared or is_child_rank() else _claim(RunFolder(folder))


def _claim(run: RunFolder, only_read: bool = False) -> RunFolder | None:
    """This process's claim on a run folder; a panel when another live process holds it. A folder
    a resume only reads (only_read) that cannot be written (an archive) is read without a claim."""
    try:
        owner = claim(run, "the same command", WRITABLE)
    except Refused as refused:
        if only_read and not isinstance(refused.error, DiskFull):
            return None
        raise
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
    skip = ("ckpt_path=", "resume=")
    original = [str(o) for o in yaml.safe_load(recorded.read_text()) if o != "resume=null"]
    # resume= itself is not passed on: ckpt_path records (and links to) the run resumed. A run
    # stopped before its first checkpoint starts again from what it was started from.
    last = RunFolder(folder).last_checkpoint
    mine = [o for o in overrides if not o.startswith(skip)]
    if last.is_file():
        original = [o for o in original if not o.startswith(skip)]
        mine.append(f"ckpt_path={last}")
    return merge_overrides(original, mine)


def _overrides_of_one_run(args) -> tuple[list[str], list[str]]:
    """The overrides with resume= expanded, and those of one run (a sweep's first job)."""
    overrides = expand_resume(list(args.overrides), args.multirun)
    return overrides, (first_of_each_sweep(overrides) if args.multirun else overrides)


def precheck(
    config_name: str, argv: list[str], check_run: Callable | None, held: list[RunFolder | None]
) -> tuple[list[str], tuple[Any] | None]:
    """Compose and validate what Hydra will run; return the command line to hand Hydra and, for a
    single run, (check_run's result,). `held` gets the folders claimed (its own, one resumed)."""
    args = parse_args(argv)
    if args.hydra_help or args.info or args.shell_completion:  # Hydra answers: no run, no folder
        return argv, None
    # The flags (and their values) without the overrides, which may stand anywhere among them.
    flags = [token for token in argv if token not in args.overrides]
    overrides, composed = _overrides_of_one_run(args)
    # hydra.main composes again (~0.1 s): what is decided here changes the command line Hydra reads
    # (resume=, job folder names), and a Hydra Callback (built by Hydra from the config) could
    # hand check_run's result to the task only through module state.
    cfg = compose_checked(config_name, composed)
    validate(cfg)
    if "trainer" in cfg and not args.multirun:
        prepare_srun(cfg.trainer)  # srun -n N: the tasks per node, for Lightning
    if is_child_rank():
        if external_launch():
            claim_run_folder(cfg, overrides, args.multirun)
        return [*flags, *overrides, *CHILD_RANK_OVERRIDES], None
    if args.cfg and args.multirun:  # Hydra refuses the pair with a traceback
        raise ConfigError(
            "--cfg shows one job's config, and -m asks for a sweep.",
            fix="Leave out -m to see the first job's config (give one value per key), "
            "or run the sweep without --cfg.",
        )
    if args.cfg:
        return [*flags, *overrides], None
    # Job folder names, and the launcher checked; a sweep's DDP job (ddp_job.py) was, by its sweep.
    job = None if args.multirun else sweep_job()
    sweep = [] if job else sweep_settings(cfg, overrides, args.multirun)
    if args.multirun:  # the storage recorded in multirun.yaml: a resume elsewhere finds the study
        claim_run_folder(cfg, overrides, multirun=True)
        return [*flags, *(absolute_storage_override(o) for o in overrides), *sweep], None
    checked = None if check_run is None else (check_run(cfg),)
    if job:  # it runs in the job's folder, on the job's claim (which the sweep's job releases)
        os.environ[RUN_DIR_ENV] = job["folder"]
        RunFolder(job["folder"]).adopt()
        return [*flags, *overrides], checked
    resumed = given_value(args.overrides, "resume")
    if resumed not in (None, "null"):  # one command continues a run
        held.append(_claim(RunFolder(resumed), only_read=True))
    held.append(claim_run_folder(cfg, overrides, multirun=False))
    return [*flags, *overrides], checked


def exit_with(error: LenetError) -> None:
    """The short panel and the exit code; the traceback too when HYDRA_FULL_ERROR=1 asks for it."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        traceback.print_exception(error)
    if not hand_to_sweep(error, is_child_rank()) and not (error.every_rank and is_child_rank()):
        print_error(error)
    process.exit_quickly(error.exit_code)  # effective only where the command asked for it
    sys.exit(error.exit_code)


def run_app(
    task: Callable, config_name: str, check_run: Callable | None = None, tune_process: bool = False
) -> None:
    """Entry point body of a lenet-cli Hydra command (lenet-train, lenet-eval). A single run's task
    gets (check_run(cfg),) from the pre-check; a sweep's jobs get None and check themselves.
    tune_process: apply lenet_cli/cli/process.py's settings (to the command's own process only)."""
    if tune_process:
        process.skip_teardown_at_exit()
    args, held, sweep = parse_args(sys.argv[1:]), [], None
    try:
        if args.help:  # ours: Hydra's lists its config groups at about a second's cost
            print(help_text(config_name, _overrides_of_one_run(args)[1], resolve=args.resolve))
            return
        sys.argv[1:], checked = precheck(config_name, sys.argv[1:], check_run, held)
        sweep = given_value(sys.argv[1:], "hydra.sweep.dir") or os.environ.get(SWEEP_DIR_ENV)
        if args.multirun:  # SIGTERM between two jobs: the resume panel, as for Ctrl-C (during a
            signal.signal(signal.SIGTERM, signal.default_int_handler)  # job, training's takes it)
        # A log line that cannot be written (a full disk) is dropped, not printed with a
        # traceback: the failure that matters reaches its panel through the write that raised it.
        logging.raiseExceptions = False
        _run_hydra(task, config_name, checked, tune_process)
    except (LenetError, Refused) as error:  # the pre-check's, or refused inside Hydra (a launcher)
        exit_with(error.error if isinstance(error, Refused) else error)
    except KeyboardInterrupt:  # Ctrl-C outside training (which stops with its own panel)
        exit_with(sweep_interrupted(sweep) if args.multirun else Interrupted("Stopped by Ctrl-C."))
    finally:
        for run in filter(None, held):
            run.release()
        folder = os.environ.get(RUN_DIR_ENV) or os.environ.get(SWEEP_DIR_ENV)
        if folder and not is_child_rank():  # a run that failed before writing anything
            with contextlib.suppress(OSError):  # leaves no empty folder behind
                Path(folder).rmdir()  # only succeeds when empty
    failed = args.multirun and sweep and Path(sweep).is_dir() and read_sweep(Path(sweep)).failed
    process.exit_quickly(1 if failed else 0)  # a sweep that lists a failed job: exit code 1
    if failed:
        sys.exit(1)


def _run_hydra(task: Callable, config_name: str, checked: tuple[Any] | None, tune: bool) -> None:
    """hydra.main around the task, its error as a panel (a sweep records a job's and goes on)."""

    def job(cfg: DictConfig) -> Any:
        if tune:  # allocator and CUDA-check settings, before the task runs
            process.keep_freed_memory()
            process.use_plain_cuda_check(cfg.trainer.get("strategy"))
        if HydraConfig.get().mode.name == "MULTIRUN":
            return run_isolated(task, cfg)
        try:
            return task(cfg, checked)
        except LenetError as error:
            exit_with(error)
        except OSError as error:  # a full disk: the panel, and how to continue once there is room
            again = f"lenet-{config_name} resume={short_path(cfg.paths.output_dir)}"
            full = RunFolder(cfg.paths.output_dir).out_of_space(error, again)
            if full is None:
                raise
            exit_with(full)

    hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)(job)()
