"""hydra-submitit-launcher's SLURM launcher (`hydra/launcher=slurm`), with sbatch's refusals of the
job array (no GPUs, an unknown partition or account) as a panel with the setting to change, exit
code 2, instead of Hydra's traceback; the sweep folder, unused then, is removed."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

from lenet_cli.cluster import slurm
from lenet_cli.errors import ConfigError, Refused
from lenet_cli.run_folder import CLAIMS, RunFolder


class RefusalAwareSlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        from submitit.core.utils import FailedJobError

        try:
            return super().launch(job_overrides, initial_job_idx)
        except FailedJobError as error:
            message = str(error).strip()
            if not message.startswith("sbatch"):
                raise  # a job that failed, not a submission that was refused
            remove_if_unused(Path(str(self.config.hydra.sweep.dir)))
            raise Refused(refusal(message)) from None


def remove_if_unused(folder: Path) -> None:
    """Remove the sweep folder when it holds only submitit's files and this command's claims of
    jobs never started (another worker's claims keep it)."""

    def unused(entry: Path) -> bool:
        if entry.name in (".submitit", "multirun.yaml"):
            return True
        owner = RunFolder(entry).owner() if entry.is_dir() else None
        return owner is not None and owner.is_me() and os.listdir(entry) == [CLAIMS]

    if folder.is_dir() and all(unused(entry) for entry in folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # <date>/, multirun/, outputs/ while now empty
            for parent in list(folder.parents)[:3]:
                parent.rmdir()


def refusal(message: str) -> ConfigError:
    """sbatch's refusal, with the setting that fixes it."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    said = " ".join(dict.fromkeys(lines))  # sbatch can repeat itself
    lower = said.lower()
    if "generic resource" in lower or "gres" in lower:
        fix = (
            "This cluster (or partition) has no GPUs to give: sweep on its CPUs with "
            "hydra/launcher=slurm_cpu, or set hydra.launcher.gpus_per_task=null (and "
            "trainer=cpu), or choose a GPU partition with hydra.launcher.partition=<name>."
        )
    elif "partition" in lower:
        listed, out = slurm("sinfo", "-h", "-o", "%P")  # "*" marks the default partition
        names = ", ".join(p.rstrip("*") for p in out.split()) if listed else "sinfo lists them"
        fix = f"Set hydra.launcher.partition to one of this cluster's partitions: {names}."
    elif "account" in lower:
        fix = (
            "Set hydra.launcher.account=<your account> (`sacctmgr show associations "
            "user=$USER` lists yours)."
        )
    else:
        fix = "Change the hydra.launcher.* setting that sbatch names (conf/hydra/launcher/)."
    return ConfigError(f"SLURM refused the sweep's jobs: {said}", fix=fix)
