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
from lenet_cli.sweeps.launch import (
    Claimed,
    ClaimingSweeper,
    available_cores,
    claim_jobs,
    fill_slots,
    jobs_at_once,
    launch_claimed,
)


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
        together = jobs_at_once(self.config.hydra.launcher, available_cores())
        if together is None:  # submitit, SLURM: claimed and queued in batches (all by default)
            while pending:  # claim_jobs returns no pending job once it claims none
                claimed, pending = claim_jobs(self, pending, self.max_batch_size or len(pending))
                launch_claimed(self, claimed)
            return

        def next_job() -> Claimed | None:  # one at a time: several commands share the grid
            nonlocal pending
            claimed, pending = claim_jobs(self, pending, 1)
            return claimed[0] if claimed else None

        fill_slots(self, together, next_job, lambda job, result: True)
