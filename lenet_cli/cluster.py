"""SLURM: the task layout that `srun` gives a DDP run, and the run folder that outlives a requeue.

What Lightning's SLURMEnvironment lacks: it reads the layout only from SLURM_NTASKS_PER_NODE
(`srun --ntasks-per-node=2`); the form most users type, `srun -n 2`, sets SLURM_TASKS_PER_NODE
("2", "2(x3)", "3,1") instead, and Lightning refuses it. An even spread is passed on to
Lightning; an uneven one is refused with the form that works.
"""

from __future__ import annotations

import os
import re
from typing import Any

from lenet_cli.errors import ConfigError


def in_slurm_job() -> bool:
    """Inside a SLURM job (batch script or srun step), not an interactive allocation's shell:
    Lightning treats a job named "bash" or "interactive" (salloc / srun --pty bash) as no job."""
    env = os.environ
    return "SLURM_JOB_ID" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def srun_tasks() -> int:
    """How many tasks srun started for this step (1 outside srun)."""
    if not in_slurm_job() or "SLURM_PROCID" not in os.environ:
        return 1
    return int(os.environ.get("SLURM_NTASKS", "1"))


class SrunLayoutError(ConfigError, every_rank=True):
    """srun's tasks do not fit the trainer: every task finds it, rank 0 shows the one panel."""


def prepare_srun(trainer_cfg: Any) -> None:
    """Under `srun -n N` or `srun --ntasks-per-node=N`: give Lightning the tasks per node, and
    check them against trainer.devices and trainer.num_nodes before anything is written."""
    tasks = srun_tasks()
    if tasks <= 1:
        return
    env = os.environ
    per_node = env.get("SLURM_NTASKS_PER_NODE")
    nodes = int(env.get("SLURM_NNODES", "1"))
    if per_node is None:
        layout = env.get("SLURM_TASKS_PER_NODE", str(tasks))
        # Even: the first node's count, then the same (\1) on every other node or run of nodes.
        even = re.fullmatch(r"(\d+)(?:\(x\d+\))?(?:,\1(?:\(x\d+\))?)*", layout.strip())
        if even is None:
            raise SrunLayoutError(
                f"srun started {tasks} tasks spread unevenly over {nodes} nodes "
                f"(SLURM_TASKS_PER_NODE={layout}); DDP needs the same number on every node.",
                fix=f"Ask for tasks per node: srun --nodes={nodes} --ntasks-per-node=<devices per "
                "node> lenet-train ...",
            )
        per_node = env["SLURM_NTASKS_PER_NODE"] = even.group(1)  # what Lightning reads
    devices, num_nodes = trainer_cfg.get("devices", "auto"), trainer_cfg.get("num_nodes", 1)
    if str(devices) != per_node:
        raise SrunLayoutError(
            f"srun started {per_node} task(s) per node, but trainer.devices={devices}: "
            "each task drives one device.",
            fix=f"Add trainer.devices={per_node} with a DDP strategy (e.g. trainer=ddp_cpu, "
            "trainer=ddp), or start one task per device.",
        )
    if int(num_nodes or 1) != nodes:
        raise SrunLayoutError(
            f"srun's tasks run on {nodes} node(s), but trainer.num_nodes={num_nodes}.",
            fix=f"Add trainer.num_nodes={nodes}.",
        )


def job_id() -> str:
    """This job's id as SLURM's commands take it: <job>, or <array job>_<task> in an array
    (the array's own id alone would name every task of it)."""
    if "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


def job_run_name() -> str | None:
    """The run folder's name inside a SLURM job, `slurm-<job>[_<array task>][.<step>]`: the same
    when the job is requeued (preemption, `scontrol requeue`), so the restarted run finds its
    folder and the last.ckpt in it."""
    if not in_slurm_job():
        return None
    name = f"slurm-{job_id()}"
    step = os.environ.get("SLURM_STEP_ID")
    if step is not None and step.isdigit() and int(step) < 0xFFFFFFF0:  # not the batch step
        name += f".{step}"
    return name


def restart_count() -> int:
    """How many times SLURM has started this job again (0 on its first start)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def job_being_requeued() -> bool:
    """Whether SLURM is requeuing this job right now (its SIGTERM is a restart, not a cancel):
    `scontrol show job` counts the restart before the job's processes are stopped."""
    if not in_slurm_job():
        return False
    shown = slurm("scontrol", "show", "job", "-o", os.environ["SLURM_JOB_ID"])[1]
    found = re.search(r"\bRestarts=(\d+)", shown)
    return bool(found) and int(found.group(1)) > restart_count()


def slurm(*command: str) -> tuple[bool, str]:
    """Run one of SLURM's commands: whether it worked, and what it said (its output, or why not)."""
    import subprocess  # only where SLURM is asked something

    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        return False, str(error)
    return done.returncode == 0, (done.stdout if done.returncode == 0 else done.stderr).strip()
