"""A sweep's DDP job runs as a lenet-train run of its own, in the job's folder. What Lightning
lacks: its DDP launcher starts the other processes by running the command again (sys.argv), which
in a multirun is the whole sweep (Lightning took its Hydra multirun support out, #15737; #11300 is
open). So such a job runs `python -m <the command's module> <its overrides>`, whose Lightning
starts the others as for a single run (on SLURM, srun starts them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lenet_cli.cluster import in_slurm_job
from lenet_cli.console import console, short_path
from lenet_cli.errors import DiskFull, Interrupted, LenetError, Refused
from lenet_cli.overrides import override_key
from lenet_cli.run_folder import RunFolder

SWEEP_JOB_ENV = "LENET_SWEEP_JOB"  # {"sweep_dir", "num", "folder"}: which job that run is


def sweep_job() -> dict[str, Any] | None:
    """The sweep job this process runs as a run of its own (LENET_SWEEP_JOB), None otherwise."""
    return json.loads(os.environ.get(SWEEP_JOB_ENV) or "null")


def processes(trainer_cfg: Any) -> int:
    """The processes Lightning trains in: devices x nodes (auto and -1: every GPU, or 1 CPU)."""
    devices, nodes = trainer_cfg.get("devices", "auto"), trainer_cfg.get("num_nodes", 1)
    if devices in ("auto", -1):
        import torch

        on_gpu = str(trainer_cfg.get("accelerator", "auto")) in ("auto", "gpu", "cuda")
        devices = torch.cuda.device_count() if on_gpu else 1
    count = len(devices) if OmegaConf.is_list(devices) or isinstance(devices, list) else devices
    valid = isinstance(count, int) and isinstance(nodes, int)
    return max(1, count * nodes) if valid else 1  # not valid: the job's own check says why


def runs_apart(cfg: DictConfig) -> bool:
    """Whether this multirun job trains in processes that Lightning starts by running the
    command again (or forks from the sweep's process, CUDA state included): it then runs apart."""
    trainer = cfg.get("trainer")
    if not trainer or in_slurm_job():  # on SLURM, srun starts every process of a job
        return False
    strategy = trainer.get("strategy", "auto")
    name = str(strategy.get("_target_", "") if hasattr(strategy, "get") else strategy).lower()
    return any(word in name for word in ("ddp", "fsdp", "deepspeed")) or processes(trainer) > 1


def run_apart(task: Callable, cfg: DictConfig, hydra_cfg: Any, threads: int | None) -> Any:
    """Run this job as a run of its own and wait for it; return what the task returns (from
    metrics.json) or raise the error it recorded (hand_to_sweep) or its exit status says."""
    run = RunFolder(Path(hydra_cfg.runtime.output_dir).resolve())
    # The job's config (its config name, a --config-dir, the Hydra overrides not about the sweep,
    # its own) in the folder LENET_SWEEP_JOB names, not hydra.run.dir (a job folder's name holds
    # '=' and ','); output_subdir=null keeps the sweep's .hydra/ records of the job as they are.
    sources = hydra_cfg.runtime.config_sources
    given = [f"--config-dir={s.path}" for s in sources if s.provider == "command-line"]
    swept = ("hydra.mode", "hydra.sweep.", "hydra/launcher", "hydra.launcher.", "hydra.job.config.")
    hydra = [o for o in hydra_cfg.overrides.hydra if not override_key(o).startswith(swept)]
    overrides = [f"--config-name={hydra_cfg.job.config_name}", *given, *hydra]
    overrides += [*hydra_cfg.overrides.task, "hydra.output_subdir=null"]
    last = None if cfg.get("ckpt_path") else run.continue_from()
    if last is not None:  # as a job in the sweep's process continues (cli/train.py)
        console.print(f"Continuing the stopped run from {short_path(last)}.")
        overrides.append("ckpt_path='{}'".format(str(last).replace("'", "\\'")))
    sweep_dir = str(Path(hydra_cfg.sweep.dir).resolve())
    job = {"sweep_dir": sweep_dir, "num": hydra_cfg.job.num, "folder": str(run.path)}
    env = {**os.environ, SWEEP_JOB_ENV: json.dumps(job)}
    if threads:  # jobs share the machine (a worker's own OMP_NUM_THREADS counts one process)
        env["OMP_NUM_THREADS"] = str(max(1, threads // processes(cfg.trainer)))
    # A sweep prints one line per job: the run's card and summary are in its log.
    quiet = not OmegaConf.select(cfg, "console.verbose", default=False)
    command = [sys.executable, "-m", task.__module__, *overrides]  # the command's own module
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL if quiet else None)
    code, stopped = _wait(child)
    if code == 0 and not stopped:
        return run.metrics().get("val/acc_best")  # what lenet-train's task returns
    said = run.status()
    said = said if said.get("pid") == child.pid else {}  # not an earlier run's record
    if said.get("title") == DiskFull.title:  # the next jobs would fail the same way: stop
        raise Refused(DiskFull(said["message"], fix=said.get("fix")))
    how = f"signal {-code}" if code < 0 else f"exit code {code}"
    ended = "Stopped by Ctrl-C or SIGTERM." if stopped else f"The job's DDP run ended with {how}."
    error = (Interrupted if stopped or said.get("status") == "interrupted" else LenetError)(
        said.get("message") or ended,
        fix=said.get("fix") or f"Its error is printed above; its log is {run.path}/train.log.",
        details=said.get("details"),
    )
    error.title = said.get("title") or error.title  # the panel's title, as the run gave it
    raise error


def _wait(child: subprocess.Popen) -> tuple[int, bool]:
    """The child's exit status and whether Ctrl-C or SIGTERM came, passed on as SIGTERM: a clean
    stop at the next step (the terminal's Ctrl-C reaches it too; a second SIGINT stops mid-step)."""
    signals: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        signals.append(signum)
        child.send_signal(signal.SIGTERM)

    main = threading.current_thread() is threading.main_thread()  # only it sets handlers
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM) if main}
    try:
        return child.wait(), bool(signals)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def hand_to_sweep(error: LenetError, child_rank: bool) -> bool:
    """In a sweep's DDP job: rank 0 records `error` in the job's folder, and the sweep shows it
    as a failed job's panel (run_apart). Returns whether the sweep shows it (else the caller)."""
    job = sweep_job()
    if job is not None and not child_rank:
        status = "interrupted" if isinstance(error, Interrupted) else "failed"
        panel = {key: getattr(error, key) for key in ("title", "message", "fix", "details")}
        try:
            RunFolder(job["folder"]).record({"status": status, "pid": os.getpid(), **panel})
        except OSError:  # a full disk: the panel here, then
            return False
    return job is not None
