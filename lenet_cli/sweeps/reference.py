"""A sweep's results next to published ones: one row per reference row of the jobs' configs.

A job whose config has a `reference` block (conf/lecun98/*.yaml: the row's name, its order, the
published test error in percent) belongs to that row; the jobs of a row differ by seed. The table
gives per row the network's parameters and multiply-accumulates per image, the measured test
error (mean and sample standard deviation over the row's finished jobs), the published error, the
difference, and the mean training time of a run; it is written as reference.md and reference.csv
in the sweep folder.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:  # the summary calls this module: no import at run time, no circle
    from lenet_cli.sweeps.summary import SweepResult


@dataclass
class ReferenceRow:
    name: str
    order: float
    published: float  # test error, percent
    model: str
    params: int
    macs: int
    errors: list[float] = field(default_factory=list)  # measured test errors, percent
    fit_seconds: list[float] = field(default_factory=list)  # training time of each run
    failed: int = 0

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.errors) if self.errors else None

    @property
    def spread(self) -> float | None:
        return statistics.stdev(self.errors) if len(self.errors) > 1 else None

    @property
    def difference(self) -> float | None:
        return None if self.mean is None else self.mean - self.published


def _job_config(folder: Path) -> Any:
    from omegaconf import OmegaConf

    path = folder / ".hydra" / "config.yaml"
    return OmegaConf.load(path) if path.is_file() else None


def reference_rows(sweep: SweepResult) -> list[ReferenceRow]:
    """The rows, in their configured order; [] when no job of the sweep has a reference."""
    from omegaconf import OmegaConf

    from lenet_cli.models.describe import describe

    rows: dict[str, ReferenceRow] = {}
    for job in sweep.jobs:
        cfg = _job_config(job.folder)
        reference = OmegaConf.select(cfg, "reference") if cfg is not None else None
        if not reference:
            continue
        name = str(reference.row)
        if name not in rows:
            model = OmegaConf.to_container(cfg.model, resolve=True)
            total = describe(model)["total"]
            rows[name] = ReferenceRow(
                name, float(reference.get("order", len(rows))), float(reference.test_error),
                str(model.get("name")), int(total["params"]), int(total["macs"]),
            )  # fmt: skip
        accuracy = job.metrics.get("test/acc")
        if job.status == "ok" and accuracy is not None and not math.isnan(accuracy):
            rows[name].errors.append(100.0 * (1.0 - accuracy))
            rows[name].fit_seconds.append(job.metrics.get("fit_seconds", math.nan))
        else:
            rows[name].failed += 1
    return sorted(rows.values(), key=lambda row: row.order)


HEADER = ["row", "model", "params", "MACs", "runs", "fit min/run", "test error %", "paper %",
          "difference"]  # fmt: skip


def _cells(row: ReferenceRow) -> list[str]:
    measured = "-" if row.mean is None else f"{row.mean:.2f}"
    if row.spread is not None:
        measured += f" ± {row.spread:.2f}"
    runs = str(len(row.errors)) + (f" ({row.failed} failed)" if row.failed else "")
    difference = "-" if row.difference is None else f"{row.difference:+.2f}"
    minutes = "-" if not row.fit_seconds else f"{statistics.fmean(row.fit_seconds) / 60:.1f}"
    return [row.name, row.model, f"{row.params:,}", f"{row.macs:,}", runs, minutes, measured,
            f"{row.published:.2f}", difference]  # fmt: skip


def reference_table(rows: list[ReferenceRow]) -> Table:
    table = Table(title="next to the paper (test error, %)", title_style="bold",
                  header_style="bold cyan")  # fmt: skip
    for name in HEADER:
        table.add_column(name, justify="left" if name in ("row", "model") else "right")
    for row in rows:
        table.add_row(*_cells(row))
    return table


def write_reference(folder: Path, rows: list[ReferenceRow]) -> None:
    from lenet_cli.files import write_text_atomic

    lines = [f"# Sweep {folder.name} next to the paper", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]  # fmt: skip
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    note = ("Test error: mean ± sample standard deviation over the row's runs (seeds); "
            "difference: measured mean minus the paper's error, in percentage points; "
            "fit min/run: mean training time of a run (metrics.json's fit_seconds).")  # fmt: skip
    write_text_atomic(folder / "reference.md", "\n".join([*lines, "", note]) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "model", "params", "macs", "runs", "failed", "fit_seconds_mean",
                     "test_error_mean",
                     "test_error_std", "paper_test_error", "difference",
                     "test_errors"])  # fmt: skip
    for row in rows:
        writer.writerow([
            row.name, row.model, row.params, row.macs, len(row.errors), row.failed,
            round(statistics.fmean(row.fit_seconds), 1) if row.fit_seconds else "",
            "" if row.mean is None else round(row.mean, 4),
            "" if row.spread is None else round(row.spread, 4),
            row.published, "" if row.difference is None else round(row.difference, 4),
            " ".join(f"{e:.2f}" for e in row.errors),
        ])  # fmt: skip
    write_text_atomic(folder / "reference.csv", buffer.getvalue())
