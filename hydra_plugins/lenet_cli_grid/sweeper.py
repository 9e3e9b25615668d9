"""The grid of `lenet-train -m a=1,2 b=x,y`. Hydra's BasicSweeper launches every job it
enumerates, so two commands on one sweep folder (two `-m resume=<sweep>`, a SLURM array) would
both train every job; this one enumerates the grid the same way (the same job numbers, so the
same folders) and launches only the jobs whose folders it claims (lenet_cli/sweeps/launch.py)."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lenet_cli.errors import ConfigError, Refused
from lenet_cli.files import write_text_atomic
from lenet_cli.overrides import grid
from lenet_cli.sweeps.launch import ClaimingSweeper, claim_jobs, launch_claimed


@dataclass
class GridSweeper(ClaimingSweeper):
    params: Any = None  # hydra.sweeper.params, as Hydra's BasicSweeper takes them
    max_batch_size: int | None = None
    pruner: Any = None  # only `none` gets here: a grid has no study (launch.py sweep_settings)

    def sweep(self, arguments: list[str]) -> None:
        folder = Path(str(self.config.hydra.sweep.dir))
        write_text_atomic(folder / "multirun.yaml", OmegaConf.to_yaml(self.config))  # makes folder
        try:  # every job's overrides, in the order of Hydra's BasicSweeper (the same numbers)
            pending = [*enumerate(grid(arguments, self.hydra_context.config_loader, self.params))]
        except ConfigError as error:  # inside Hydra, which catches Exceptions: the panel
            raise Refused(error) from None
        size = self.max_batch_size or launched_together(self.config.hydra.launcher)
        while pending:  # claim_jobs returns no pending job once it claims none
            claimed, pending = claim_jobs(self, pending, size)
            launch_claimed(self, claimed)


def launched_together(launcher: Any) -> int:
    """Jobs to claim and launch at once: as many as the launcher runs together (joblib: n_jobs;
    submitit: all, they queue), else one, so that several commands on one sweep share its jobs."""
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        n_jobs = int(launcher.get("n_jobs") or 1)
        return n_jobs if n_jobs > 0 else 1_000_000
    return 1_000_000 if "submitit" in target or target.endswith("SlurmLauncher") else 1
