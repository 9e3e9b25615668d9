"""A sweep's job lines and summary (a rich table, summary.csv and summary.md; experiment=lecun98:
reference.csv and .md too), read back from the job folders (Hydra's `.hydra/` records, run_folder):
the jobs may have run in other processes (joblib), on other machines (SLURM) or other commands."""

from __future__ import annotations

import csv
import io
import math
import statistics
import time
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from lenet_cli.console import console, print_error, short_path
from lenet_cli.errors import LenetError
from lenet_cli.files import write_text_atomic
from lenet_cli.models.describe import describe
from lenet_cli.overrides import grid, key_value
from lenet_cli.run_folder import RunFolder

METRICS = ("val/acc_best", "test/acc", "test/loss", "fit_seconds")
YAML = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's: 0.7 ms, not 6, per hydra.yaml
KILLED = "no metrics.json or job_status.json: the job was stopped before it finished"
PAPER_TITLE = "next to the paper (test error, %)"
PAPER_NOTE = (
    "Test error: mean ± sample standard deviation over the row's runs (seeds); difference: "
    "measured mean minus the paper's error, in percentage points; fit min/run: mean training "
    "time of a run (metrics.json's fit_seconds)."
)
PAPER_PLAIN = ["row", "model", "params", "macs", "runs", "failed", "fit_seconds_mean",
               "test_error_mean", "test_error_std", "paper_test_error", "difference",
               "test_errors"]  # fmt: skip
PAPER_SHOWN = ["row", "model", "params", "MACs", "runs", "fit min/run", "test error %",
               "paper %", "difference"]  # fmt: skip


@dataclass
class JobResult:
    num: int
    folder: Path
    state: str  # the run folder's: finished, failed, running, stopped or new
    status: str  # "ok", "pruned", "failed", "interrupted" or "running" (in another command)
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)  # key -> value, no +/++/~ prefix
    command: list[str] = field(default_factory=list)  # the overrides as given, to run it again

    def score(self, name: str = "val/acc_best") -> float | None:
        value = self.metrics.get(name)
        return value if isinstance(value, (int, float)) and not math.isnan(value) else None


@dataclass
class SweepResult:
    folder: Path
    jobs: list[JobResult]  # best first
    varying: list[str]  # override keys whose values differ between jobs

    @property
    def failed(self) -> list[JobResult]:
        return [job for job in self.jobs if job.status not in ("ok", "pruned", "running")]


def read_job(folder: Path, settings: bool = True) -> JobResult:
    """A job folder as the summary shows it; its number and overrides (Hydra's records) only with
    `settings`: after each job of a long sweep every folder is read, then only its small files."""
    run = RunFolder(folder)
    state, recorded = run.state(), run.status()
    # No metrics.json and no record: a job killed from outside (a time limit, out of memory).
    status, reason = ("ok", "") if state == "finished" else ("failed", KILLED)
    if state == "running" and (owner := run.owner()) is not None:
        status, reason = "running", f"running in {owner.describe()}"
    elif recorded and (status != "ok" or recorded.get("status") == "pruned"):
        status, reason = recorded.get("status", "failed"), recorded.get("reason", "")
    metrics = {k: float(v) for k, v in run.metrics().items() if isinstance(v, (int, float))}
    head = folder.name.split("_")[0]
    job = JobResult(int(head) if head.isdigit() else -1, folder, state, status, reason, metrics)
    if settings:  # hydra.yaml holds the job's overrides too (as overrides.yaml does)
        hydra = yaml.load((folder / ".hydra" / "hydra.yaml").read_text(), YAML)["hydra"]
        job.num = int(hydra["job"]["num"])
        job.command = [str(line) for line in hydra["overrides"]["task"]]
        job.overrides = dict(map(key_value, job.command))
    return job


def varying_keys(jobs: list[dict[str, str]]) -> list[str]:
    """The keys (in command-line order) of the jobs' overrides whose value differs between jobs."""
    keys = dict.fromkeys(key for job in jobs for key in job)
    return [key for key in keys if len({job.get(key) for job in jobs}) > 1]


def read_sweep(folder: Path) -> SweepResult:
    """Every job under a sweep folder (any depth, since hydra.sweep.subdir may nest), best first:
    good jobs by best validation accuracy, then pruned, running and failed jobs, by number."""
    folders = sorted(p.parent for p in folder.rglob(".hydra") if p.parent != folder)
    jobs = [read_job(f) for f in folders if (f / ".hydra" / "hydra.yaml").exists()]
    order = {"ok": 0, "pruned": 1, "running": 2}
    jobs.sort(key=lambda j: (order.get(j.status, 3), j.score() is None, -(j.score() or 0), j.num))
    return SweepResult(folder, jobs, varying_keys([job.overrides for job in jobs]))


def finished_jobs(sweep_folder: Path) -> list[JobResult]:
    """The jobs of a sweep folder that finished or failed (a resume continues the others)."""
    jobs = [read_job(p, settings=False) for p in sweep_folder.iterdir() if p.is_dir()]
    return [job for job in jobs if job.state in ("finished", "failed")]


def _jobs(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


def _fmt(name: str, value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if name.endswith("acc") or name.endswith("acc_best"):
        return f"{100 * value:.2f}%"
    return f"{value:.1f}" if name == "fit_seconds" else f"{value:.4f}"


def short_names(keys: list[str]) -> list[str]:
    """The shortest dotted suffix that tells each key apart: optimizer.lr -> lr."""
    names = []
    for key in keys:
        parts = key.split(".")
        suffixes = (".".join(parts[-n:]) for n in range(1, len(parts) + 1))
        unique = (s for s in suffixes if sum(k == s or k.endswith("." + s) for k in keys) == 1)
        names.append(next(unique, key))
    return names


def _short_value(value: str) -> str:
    """Sampled floats (0.0008468008575248334) shown with 4 significant digits."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if "." in value and len(value) > 8 else value


def write_tables(
    folder: Path, name: str, title: str, plain: list[list], shown: list[list], note: str = ""
) -> None:
    """<name>.csv (the plain table) and <name>.md (the table people read) in folder."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(plain)
    write_text_atomic(folder / f"{name}.csv", buffer.getvalue())
    lines = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in shown]
    lines = [f"# {title}", "", lines[0], "|" + "---|" * len(shown[0]), *lines[1:]]
    lines += ["", note] if note else []
    write_text_atomic(folder / f"{name}.md", "\n".join(lines) + "\n")


def rich_table(title: str, shown: list[list], right: Container[str], styles=None) -> Table:
    """A table for the terminal: `shown`'s header and rows, the `right` columns right-aligned."""
    table = Table(title=title, title_style="bold", header_style="bold cyan")
    for name in shown[0]:
        table.add_column(name, justify="right" if name in right else "left")
    for row, style in zip(shown[1:], styles or [None] * (len(shown) - 1), strict=True):
        table.add_row(*(str(v) for v in row), style=style)
    return table


def write_summary(sweep: SweepResult) -> None:
    """summary.csv (full key names, raw numbers, job folders), summary.md (short names, formatted)
    and the table printed (reasons below it, at full width); the same next to the paper."""
    plain = [["job", *sweep.varying, "status", *METRICS, "reason", "folder"]]
    shown = [["job", *short_names(sweep.varying), "status", *METRICS[:-1], "fit s", "reason"]]
    for job in sweep.jobs:
        settings = [job.overrides.get(key, "") for key in sweep.varying]
        values = [job.metrics.get(name) for name in METRICS]
        numbers = ["" if v is None else round(v, 6) for v in values]
        folder = job.folder.relative_to(sweep.folder).as_posix()
        plain.append([job.num, *settings, job.status, *numbers, job.reason, folder])
        formatted = map(_fmt, METRICS, values)
        shown.append([job.num, *map(_short_value, settings), job.status, *formatted, job.reason])
    without_reasons = [row[:-1] for row in shown]
    title = f"Sweep {sweep.folder.name}: {_jobs(len(sweep.jobs))}, best first"
    write_tables(sweep.folder, "summary", title, plain, shown if sweep.failed else without_reasons)
    failed = len(sweep.failed)
    title = f"sweep summary: {_jobs(len(sweep.jobs))}" + (f", {failed} failed" if failed else "")
    styles = [{"ok": None, "pruned": "yellow"}.get(job.status, "red") for job in sweep.jobs]
    styles[0] = styles[0] or "bold green"  # the best job
    console.print(rich_table(title, without_reasons, ("job", *METRICS, "fit s"), styles))
    plain, shown = reference_tables(sweep.jobs)
    if len(shown) > 1:
        title = f"Sweep {sweep.folder.name} next to the paper"
        write_tables(sweep.folder, "reference", title, plain, shown, PAPER_NOTE)
        console.print(rich_table(PAPER_TITLE, shown, right=shown[0][2:]))  # all but row, model
        console.print(f"[bold]next to the paper:[/] {short_path(sweep.folder)}/reference.md")


def reference_tables(jobs: list[JobResult]) -> tuple[list[list[Any]], list[list[str]]]:
    """The rows of reference.csv and reference.md: a job whose config has a `reference` block
    (conf/lecun98/*.yaml: row, order, published test error in %) belongs to that row."""
    rows: dict[str, tuple[Any, list[JobResult]]] = {}  # name -> the row's config, its jobs
    for job in jobs:
        path = job.folder / ".hydra" / "config.yaml"
        cfg = OmegaConf.load(path) if path.is_file() else None
        if cfg is not None and OmegaConf.select(cfg, "reference"):
            rows.setdefault(str(cfg.reference.row), (cfg, []))[1].append(job)
    names = sorted(rows, key=lambda name: float(rows[name][0].reference.order))
    lines = [_paper_line(name, *rows[name]) for name in names]
    return [PAPER_PLAIN, *(p for p, _ in lines)], [PAPER_SHOWN, *(s for _, s in lines)]


def _paper_line(name: str, cfg: Any, jobs: list[JobResult]) -> tuple[list[Any], list[str]]:
    """A reference row's line in each table (the test error: mean, sample standard deviation)."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    params, macs = (int(describe(model)["total"][k]) for k in ("params", "macs"))
    done = [j for j in jobs if j.status == "ok" and j.score("test/acc") is not None]
    errors = [100.0 * (1.0 - job.metrics["test/acc"]) for job in done]
    fit = statistics.fmean(j.metrics.get("fit_seconds", math.nan) for j in done) if done else None
    mean = statistics.fmean(errors) if errors else None
    spread = statistics.stdev(errors) if len(errors) > 1 else None
    published = float(cfg.reference.test_error)
    difference = None if mean is None else mean - published
    rounded = lambda value, digits: "" if value is None else round(value, digits)
    plain = [name, str(model.get("name")), params, macs, len(errors), len(jobs) - len(done),
             rounded(fit, 1), rounded(mean, 4), rounded(spread, 4), published,
             rounded(difference, 4), " ".join(f"{e:.2f}" for e in errors)]  # fmt: skip
    measured = "-" if mean is None else f"{mean:.2f}"
    measured += "" if spread is None else f" ± {spread:.2f}"
    failed = f" ({len(jobs) - len(done)} failed)" if len(done) < len(jobs) else ""
    shown = [name, str(model.get("name")), f"{params:,}", f"{macs:,}", f"{len(errors)}{failed}",
             "-" if fit is None else f"{fit / 60:.1f}", measured, f"{published:.2f}",
             "-" if difference is None else f"{difference:+.2f}"]  # fmt: skip
    return plain, shown


def planned_jobs(config: DictConfig) -> tuple[int | None, list[str]]:
    """The jobs the sweep will run (a search's n_trials, else the grid's size), the keys varied."""
    sweeper = config.hydra.sweeper
    params = sweeper.get("params") or {}
    if "optuna" in str(sweeper.get("_target_", "")).lower():
        return int(sweeper.get("n_trials") or 0) or None, [str(k) for k in params]
    try:  # the grid as the grid sweeper enumerates it
        jobs = grid(list(map(str, config.hydra.overrides.task)), params=params)
    except Exception:  # a glob over config options (listed only by Hydra), or a refused range
        return None, []
    return len(jobs), varying_keys([dict(map(key_value, job)) for job in jobs])


def job_line(
    sweep_folder: Path, job_folder: Path, total: int | None, keys: Sequence[str] = (),
    started: float | None = None, done_before: int = 0, reused: bool = False,
) -> str:  # fmt: skip
    """One line for a finished job: what it varied, its status and score, the best so far, and
    the time left at this command's pace (since `started`, when `done_before` jobs had finished)."""
    finished = finished_jobs(sweep_folder)
    job = read_job(job_folder)
    done = len(finished)
    names = dict(zip(keys, short_names(list(keys)), strict=True))
    varied = [f"{names[k]}={_short_value(job.overrides[k])}" for k in keys if k in job.overrides]
    text = " ".join([f"job {job.num}", *varied]) + "  "
    text += "[dim](finished earlier)[/] " if reused else ""
    shown = {"ok": "[green]ok[/]", "pruned": f"[yellow]{job.reason}[/]"}.get(job.status)
    score = f" {_fmt('val/acc_best', job.score())}"
    text += shown + score if shown else f"[red]failed[/]: {job.reason[:60]}"
    scored = [j for j in finished if j.score() is not None]
    if scored:
        best = max(scored, key=lambda j: (j.score(), -j.num))
        text += f"  best {_fmt('val/acc_best', best.score())} (job {best.num})"
    if total and 0 < done <= total:
        text += f"  {done}/{total}"
        if done < total and started is not None and done > done_before:
            pace = (time.time() - started) / (done - done_before)
            minutes, secs = divmod(int(pace * (total - done) + 0.5), 60)
            hours, minutes = divmod(minutes, 60)  # an estimate's precision, in 80 columns
            left = f"{hours}h{minutes:02d}m" if hours else f"{minutes}m" if minutes else f"{secs}s"
            text += f" {left} left"
    return text


class SweepSummary(Callback):
    """Hydra callback (hydra.callbacks.sweep_summary): a line per finished job, then the summary."""

    total: int | None = None  # the jobs planned, when known
    keys: Sequence[str] = ()  # the keys they vary
    started: float | None = None
    done_before = 0  # jobs of the sweep folder finished before this command started

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()
        self.total, self.keys = planned_jobs(config)
        folder = Path(str(config.hydra.sweep.dir))
        self.done_before = len(finished_jobs(folder)) if folder.is_dir() else 0  # a resumed sweep
        jobs, where = f"{self.total} jobs" if self.total else "jobs", short_path(folder)
        console.print(f"[bold]sweep:[/] {jobs} in {where} (score: val/acc_best)", highlight=False)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self.started is not None:  # a multirun's job (launchers pickle this object for theirs)
            folders = Path(str(config.hydra.sweep.dir)), Path(str(config.hydra.runtime.output_dir))
            line = job_line(*folders, self.total, self.keys, self.started, self.done_before)
            console.print(line, highlight=False)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from lenet_cli.training.results import write_sweep_hparams  # tensorboard: only here

        folder = Path(str(config.hydra.sweep.dir))
        sweep = read_sweep(folder)
        if not sweep.jobs:
            console.print(f"[bold red]No job folders found in {short_path(folder)}.[/]")
            return
        write_summary(sweep)
        # TensorBoard's HParams view: one experiment for all jobs, the knobs that varied first.
        write_sweep_hparams(folder, [job.folder for job in sweep.jobs], sweep.varying)
        if len(sweep.failed) == len(sweep.jobs):
            first = min(sweep.jobs, key=lambda job: job.num)  # its reason, and how to rerun it
            print_error(LenetError(
                f"Every job of the sweep failed ({_jobs(len(sweep.jobs))}). The first, job "
                f"{first.num}: {first.reason or 'no reason recorded'}",
                fix="Run that job alone to see it fail in full:\n  lenet-train "
                + " ".join(first.command),
            ))  # fmt: skip
            return
        for job in sweep.failed:
            console.print(f"[red]job {job.num} failed:[/] {job.reason}")
        if (best := sweep.jobs[0]).status == "ok":
            again = " ".join(best.command)
            console.print(f"[bold]best:[/] job {best.num}  [dim]lenet-train {again}[/]")
        if (results := folder / "optimization_results.yaml").exists():  # Optuna's best trial
            best = yaml.safe_load(results.read_text()) or {}
            params = " ".join(f"{k}={v}" for k, v in (best.get("best_params") or {}).items())
            console.print(f"[bold]Optuna best (value {best.get('best_value')}): {params}[/]")
            console.print(f"  (saved in {short_path(folder)}/{results.name})")
        console.print(f"[bold]summary:[/] {short_path(folder)}/summary.csv, summary.md")
        console.print(f"[bold]tensorboard:[/] tensorboard --logdir {short_path(folder)}")
        for job in (job for job in sweep.jobs if job.status == "running"):
            where = short_path(job.folder)
            console.print(f"[yellow]job {job.num} is still {job.reason}[/]: {where}")
        if sweep.failed:
            console.print(f"[bold red]{len(sweep.failed)} of {len(sweep.jobs)} jobs failed.[/]")
