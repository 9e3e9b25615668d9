"""`lenet-train -m resume=<sweep folder>`: the sweep's recorded command line run again in its
folder. Its jobs get the same numbers, so the same folders, whose state (lenet_cli/run_folder.py)
decides whether a job runs, continues or is kept: overrides added apply only to jobs that run."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from lenet_cli.errors import ConfigError
from lenet_cli.overrides import merge_overrides
from lenet_cli.sweeps.launch import job_folder_overrides

RECORD = "multirun.yaml"  # written by the sweeper into every sweep folder: the config + overrides
# Overrides that describe where and how the earlier command ran, not what it ran.
NOT_REPLAYED = ("hydra.sweep.dir=", "hydra.mode=", "resume=")


def is_sweep_folder(folder: Path) -> bool:
    return (folder / RECORD).is_file()


def sweep_command(folder: Path, given: list[str]) -> list[str]:
    """The overrides that continue the sweep in `folder`: its recorded ones, then the given ones."""
    if not is_sweep_folder(folder):
        raise ConfigError(
            f"resume={folder}: no sweep there (a sweep folder holds {RECORD}).",
            fix="Give a folder printed by `lenet-train -m ...` (outputs/multirun/<date>/<time>); "
            "to continue a single run, leave out -m.",
        )
    # As written: a ${oc.env:...} (a study's password) stays unresolved on the new command line.
    hydra = OmegaConf.to_container(OmegaConf.load(folder / RECORD).hydra, resolve=False)
    task = [str(o) for o in hydra["overrides"]["task"]]
    # The job folder names lenet-train added are computed again for the new command line (an
    # added fixed override must stay out of them); names the user chose are replayed as given.
    ours = job_folder_overrides(task, (hydra.get("sweeper") or {}).get("params") or {})
    replayed = [str(o) for o in hydra["overrides"]["hydra"] if not str(o).startswith(NOT_REPLAYED)]
    mine = [o for o in given if not o.startswith(NOT_REPLAYED)]
    merged = merge_overrides([*(o for o in replayed if o not in ours), *task], mine)
    return [*merged, f"hydra.sweep.dir={folder}"]
