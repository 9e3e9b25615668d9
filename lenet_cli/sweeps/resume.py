"""`lenet-train -m resume=<sweep folder>`: run a sweep again in its own folder, with its recorded
command line, so that only what did not finish runs.

The sweep's jobs come out with the same numbers and therefore the same job folders (a grid is
enumerated in the same order; an Optuna search numbers jobs by trial and keeps its study in the
folder). Each job then decides for itself, in whichever process or machine runs it:

- its folder holds metrics.json: the job finished, its result is reused (`reused_result`);
- its folder holds checkpoints/last.ckpt but no metrics.json: it was interrupted, and lenet-train
  continues it from there (lenet_cli/cli/train.py, continue_unfinished);
- anything else (never started, failed): it runs from the start.
"""

from __future__ import annotations

import json
from pathlib import Path

from lenet_cli.errors import ConfigError

RECORD = "multirun.yaml"  # written by the sweeper into every sweep folder: the config + overrides
# Overrides that describe where and how the earlier command ran, not what it ran.
NOT_REPLAYED = ("hydra.sweep.dir=", "hydra.mode=", "resume=")


def is_sweep_folder(folder: Path) -> bool:
    return (folder / RECORD).is_file()


def override_key(line: str) -> str:
    """The key an override sets: `++trainer.max_epochs=5` -> trainer.max_epochs."""
    return line.split("=", 1)[0].lstrip("+~")


def merge_overrides(recorded: list[str], given: list[str]) -> list[str]:
    """The recorded command line with the given overrides added; a given key replaces the
    recorded one (Hydra would refuse a config group chosen twice)."""
    keys = {override_key(o) for o in given}
    return [o for o in recorded if override_key(o) not in keys] + list(given)


def sweep_command(folder: Path, given: list[str]) -> list[str]:
    """The overrides that continue the sweep in `folder`: its recorded ones, then the given ones,
    then the folder itself."""
    from omegaconf import OmegaConf

    from lenet_cli.sweeps.launch import job_folder_overrides

    if not is_sweep_folder(folder):
        raise ConfigError(
            f"resume={folder}: no sweep there (a sweep folder holds {RECORD}).",
            fix="Give a folder printed by `lenet-train -m ...` (outputs/multirun/<date>/<time>); "
            "to continue a single run, leave out -m.",
        )
    overrides = OmegaConf.load(folder / RECORD).hydra.overrides
    task = [str(o) for o in overrides.task]
    hydra = [str(o) for o in overrides.hydra if not str(o).startswith(NOT_REPLAYED)]
    # The job folder names lenet-train added are computed again for the new command line (an
    # added fixed override must stay out of them); names the user chose are replayed as given.
    params = OmegaConf.select(OmegaConf.load(folder / RECORD), "hydra.sweeper.params") or {}
    ours = set(job_folder_overrides(task, OmegaConf.to_container(params) if params else {}))
    hydra = [o for o in hydra if o not in ours]
    mine = [o for o in given if not o.startswith(NOT_REPLAYED)]
    return [*merge_overrides([*hydra, *task], mine), f"hydra.sweep.dir={folder}"]


def reused_result(job_folder: Path) -> dict | None:
    """The metrics of a job that already finished in this folder (a resumed sweep), else None."""
    path = job_folder / "metrics.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # a damaged result: the job runs again
