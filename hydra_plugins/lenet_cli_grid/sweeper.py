"""The grid of `lenet-train -m a=1,2 b=x,y`. Hydra's BasicSweeper launches every job it
enumerates, so two commands on one sweep folder (two `-m resume=<sweep>`, a SLURM array) would
both train every job; this one enumerates the grid the same way (the same job numbers, so the
same folders) and launches only the jobs whose folders it claims (lenet_cli/sweeps/launch.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lenet_cli.errors import ConfigError, Refused
from lenet_cli.files import write_text_atomic
from lenet_cli.overrides import grid
from lenet_cli.sweeps.launch import ClaimingSweeper, claim_jobs, launch_claimed


class GridSweeper(ClaimingSweeper):
    # pruner: only `none` gets here (a grid has no study to prune with: launch.py sweep_settings)
    def __init__(
        self, params: Any = None, max_batch_size: int | None = None, pruner: Any = None
    ) -> None:
        self.params = OmegaConf.to_container(params) if isinstance(params, DictConfig) else params
        self.max_batch_size = max_batch_size

    def sweep(self, arguments: list[str]) -> None:
        folder = Path(str(self.config.hydra.sweep.dir))
        write_text_atomic(folder / "multirun.yaml", OmegaConf.to_yaml(self.config))  # makes folder
        lines = [f"{key}={value}" for key, value in (self.params or {}).items()] + arguments
        try:  # every job's overrides, hydra.sweeper.params first (lenet_cli/overrides.py grid)
            pending = list(enumerate(grid(lines, self.hydra_context.config_loader)))
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
