"""`lenet-train -m resume=<sweep folder>`: run a sweep again in its own folder, with its recorded
command line, so that only what did not finish runs.

Its jobs come out with the same numbers, so the same folders (a grid is enumerated in the same
order; an Optuna search numbers jobs by trial and keeps its study in the folder), where each
folder's state (lenet_cli/run_folder.py) decides whether the job runs, continues or is kept as it
ran: overrides added on resume apply only to the jobs that still run. Several commands may resume
one sweep at once: they share its jobs.
"""

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
    """The overrides that continue the sweep in `folder`: its recorded ones, then the given ones,
    then the folder itself."""
    if not is_sweep_folder(folder):
        raise ConfigError(
            f"resume={folder}: no sweep there (a sweep folder holds {RECORD}).",
            fix="Give a folder printed by `lenet-train -m ...` (outputs/multirun/<date>/<time>); "
            "to continue a single run, leave out -m.",
        )
    recorded = OmegaConf.load(folder / RECORD)
    # As written: a ${oc.env:...} (a study's password) stays unresolved on the new command line.
    written = OmegaConf.to_container(recorded.hydra.overrides, resolve=False)
    task = [str(o) for o in written["task"]]
    # The job folder names lenet-train added are computed again for the new command line (an
    # added fixed override must stay out of them); names the user chose are replayed as given.
    params = OmegaConf.select(recorded, "hydra.sweeper.params") or {}
    ours = set(job_folder_overrides(task, OmegaConf.to_container(params) if params else {}))
    hydra = [str(o) for o in written["hydra"] if not str(o).startswith(NOT_REPLAYED)]
    hydra = [o for o in hydra if o not in ours]
    mine = [o for o in given if not o.startswith(NOT_REPLAYED)]
    return [*merge_overrides([*hydra, *task], mine), f"hydra.sweep.dir={folder}"]
