"""`lenet-train -m resume=<sweep folder>`: run a sweep again in its own folder, with its recorded
command line, so that only what did not finish runs.

The sweep's jobs come out with the same numbers and therefore the same job folders (a grid is
enumerated in the same order; an Optuna search numbers jobs by trial and keeps its study in the
folder). Each job then decides for itself, in whichever process or machine runs it:

- its folder holds metrics.json: the job finished, its result is reused as it ran
  (`reused_result`; overrides added on resume apply to the jobs that still run);
- its folder holds checkpoints/last.ckpt of a job that did not fail: it was interrupted, and
  lenet-train continues it from there (`continues_from`, used by lenet_cli/cli/train.py);
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
    """The recorded command line with the given overrides added: a given key replaces the
    recorded one in its place (Hydra would refuse a config group chosen twice, and a grid is
    enumerated in the order of its keys: moving one would renumber the jobs), new keys go last."""
    given_by_key = {override_key(o): o for o in given}
    merged = [given_by_key.pop(override_key(o), o) for o in recorded]
    return merged + [o for o in given if override_key(o) in given_by_key]


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
    recorded = OmegaConf.load(folder / RECORD)
    task = [str(o) for o in recorded.hydra.overrides.task]
    hydra = [str(o) for o in recorded.hydra.overrides.hydra if not str(o).startswith(NOT_REPLAYED)]
    # The job folder names lenet-train added are computed again for the new command line (an
    # added fixed override must stay out of them); names the user chose are replayed as given.
    params = OmegaConf.select(recorded, "hydra.sweeper.params") or {}
    ours = set(job_folder_overrides(task, OmegaConf.to_container(params) if params else {}))
    hydra = [o for o in hydra if o not in ours]
    mine = [o for o in given if not o.startswith(NOT_REPLAYED)]
    return [*merge_overrides([*hydra, *task], mine), f"hydra.sweep.dir={folder}"]


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # missing or damaged


RECORD_COPY = "finished"  # <job>/.hydra/finished/: the job's Hydra records as it ran


def keep_records(job_folder: Path) -> None:
    """Copy a finished job's Hydra records (.hydra/*.yaml): a resumed sweep launches the job
    again, and Hydra rewrites them with the resumed command's settings before the job can say
    that it finished; `reused_result` puts these back."""
    import shutil

    records, copy = job_folder / ".hydra", job_folder / ".hydra" / RECORD_COPY
    copy.mkdir(parents=True, exist_ok=True)
    for path in records.glob("*.yaml"):
        shutil.copy2(path, copy / path.name)


def reused_result(job_folder: Path) -> dict | None:
    """The metrics of a job that already finished in this folder (a resumed sweep), else None.
    The job is not run again: it stays as it ran, its Hydra records put back (overrides added
    on resume apply to the jobs that still run)."""
    import shutil

    from lenet_cli.sweeps.launch import STATUS_FILE

    metrics, status = _read(job_folder / "metrics.json"), _read(job_folder / STATUS_FILE)
    if not metrics or status.get("status") != "ok":
        return None
    copy = job_folder / ".hydra" / RECORD_COPY
    for path in copy.glob("*.yaml"):
        shutil.copy2(path, job_folder / ".hydra" / path.name)
    return metrics


def continues_from(job_folder: Path) -> Path | None:
    """The last.ckpt a job of a resumed sweep continues from: one written when the job was
    interrupted or killed. A job that failed starts again."""
    from lenet_cli.sweeps.launch import STATUS_FILE

    last = job_folder / "checkpoints" / "last.ckpt"
    status = _read(job_folder / STATUS_FILE).get("status")
    finished = (job_folder / "metrics.json").exists()
    return last if last.is_file() and status != "failed" and not finished else None
