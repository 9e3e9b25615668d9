"""A sweep's results next to published ones: one row per reference row of the jobs' configs.

A job whose config has a `reference` block (conf/lecun98/*.yaml: the row's name, its order, the
published test error in percent) belongs to that row; the jobs of a row differ by seed. The table
gives per row the network's parameters and multiply-accumulates per image, the measured test
error (mean and sample standard deviation over the row's finished jobs), the published error, the
difference, and the mean training time of a run; the sweep summary (lenet_cli/sweeps/summary.py)
prints it and writes it as reference.md and reference.csv in the sweep folder.
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the summary calls this module: no import at run time, no circle
    from lenet_cli.sweeps.summary import JobResult

TITLE = "next to the paper (test error, %)"
NOTE = (
    "Test error: mean ± sample standard deviation over the row's runs (seeds); difference: "
    "measured mean minus the paper's error, in percentage points; fit min/run: mean training "
    "time of a run (metrics.json's fit_seconds)."
)
PLAIN = ["row", "model", "params", "macs", "runs", "failed", "fit_seconds_mean", "test_error_mean",
         "test_error_std", "paper_test_error", "difference", "test_errors"]  # fmt: skip
SHOWN = ["row", "model", "params", "MACs", "runs", "fit min/run", "test error %", "paper %",
         "difference"]  # fmt: skip


def reference_tables(jobs: list[JobResult]) -> tuple[list[list[Any]], list[list[str]]]:
    """The table as reference.csv holds it (plain numbers) and as people read it: a header, then
    a line per reference row in the rows' configured order (none when no job has a reference)."""
    from omegaconf import OmegaConf

    rows: dict[str, tuple[Any, list[JobResult]]] = {}  # name -> the row's config, its jobs
    for job in jobs:
        path = job.folder / ".hydra" / "config.yaml"
        cfg = OmegaConf.load(path) if path.is_file() else None
        if cfg is not None and OmegaConf.select(cfg, "reference"):
            rows.setdefault(str(cfg.reference.row), (cfg, []))[1].append(job)
    first = list(rows)  # a row without an order keeps its place among the rows
    names = sorted(first, key=lambda n: float(rows[n][0].reference.get("order", first.index(n))))
    lines = [_lines(name, *rows[name]) for name in names]
    return [PLAIN, *(plain for plain, _ in lines)], [SHOWN, *(shown for _, shown in lines)]


def _lines(name: str, cfg: Any, jobs: list[JobResult]) -> tuple[list[Any], list[str]]:
    """A reference row's line in each table, from the jobs of the row."""
    from omegaconf import OmegaConf

    from lenet_cli.models.describe import describe

    model = OmegaConf.to_container(cfg.model, resolve=True)
    params, macs = (int(describe(model)["total"][k]) for k in ("params", "macs"))
    done = [
        j for j in jobs if j.status == "ok" and not math.isnan(j.metrics.get("test/acc", math.nan))
    ]
    errors = [100.0 * (1.0 - job.metrics["test/acc"]) for job in done]
    fit = statistics.fmean(j.metrics.get("fit_seconds", math.nan) for j in done) if done else None
    mean = statistics.fmean(errors) if errors else None
    spread = statistics.stdev(errors) if len(errors) > 1 else None
    published = float(cfg.reference.test_error)
    difference = None if mean is None else mean - published
    plain = [name, str(model.get("name")), params, macs, len(errors), len(jobs) - len(done),
             _rounded(fit, 1), _rounded(mean, 4), _rounded(spread, 4), published,
             _rounded(difference, 4), " ".join(f"{e:.2f}" for e in errors)]  # fmt: skip
    measured = "-" if mean is None else f"{mean:.2f}"
    measured += "" if spread is None else f" ± {spread:.2f}"
    failed = f" ({len(jobs) - len(done)} failed)" if len(done) < len(jobs) else ""
    shown = [name, str(model.get("name")), f"{params:,}", f"{macs:,}", f"{len(errors)}{failed}",
             "-" if fit is None else f"{fit / 60:.1f}", measured, f"{published:.2f}",
             "-" if difference is None else f"{difference:+.2f}"]  # fmt: skip
    return plain, shown


def _rounded(value: float | None, digits: int) -> float | str:
    return "" if value is None else round(value, digits)
