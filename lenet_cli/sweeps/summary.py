"""The summary of a sweep: one row per job, best first, printed as a rich table and written as
summary.csv and summary.md in the sweep folder.

Hydra calls `on_multirun_end` in the process that started the sweep, whatever the launcher, but
the jobs may have run in other processes (joblib) or on other machines (SLURM). So the summary is
read back from the job folders: `.hydra/hydra.yaml` and `.hydra/overrides.yaml` (which job, with
which overrides), `metrics.json` (lenet-train's results) and `job_status.json` (written by
lenet_cli/sweeps/launch.py: ok, or failed with a one-line reason). A job folder without either
file belongs to a job that was killed (time limit, out of memory) and is reported as failed;
a job that another command is running (several commands share a sweep) is reported as running.
Each job's state comes from lenet_cli/run_folder.py.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.table import Table

from lenet_cli.overrides import key_value
from lenet_cli.run_folder import RunFolder

METRICS = ("val/acc_best", "test/acc", "test/loss", "fit_seconds")
KILLED = "no metrics.json or job_status.json: the job was stopped before it finished"


@dataclass
class JobResult:
    num: int
    folder: Path
    overrides: dict[str, str]  # key -> value, without the +/++/~ prefixes
    command: list[str]  # the overrides as given, to run the job again
    status: str  # "ok", "failed", "interrupted" or "running" (in another command)
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    def score(self) -> float | None:
        value = self.metrics.get("val/acc_best")
        return value if isinstance(value, (int, float)) and not math.isnan(value) else None


@dataclass
class SweepResult:
    folder: Path
    jobs: list[JobResult]  # best first
    varying: list[str]  # override keys whose values differ between jobs

    @property
    def failed(self) -> list[JobResult]:
        return [job for job in self.jobs if job.status not in ("ok", "running")]

    @property
    def running(self) -> list[JobResult]:
        return [job for job in self.jobs if job.status == "running"]


def read_job(folder: Path) -> JobResult:
    hydra_yaml = yaml.safe_load((folder / ".hydra" / "hydra.yaml").read_text()) or {}
    num = (hydra_yaml.get("hydra") or {}).get("job", {}).get("num")
    if num is None:  # not a multirun job folder; order by name
        num = int(folder.name.split("_")[0]) if folder.name.split("_")[0].isdigit() else -1
    overrides_file = folder / ".hydra" / "overrides.yaml"
    lines = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
    overrides = dict(key_value(line) for line in lines or [])
    run = RunFolder(folder)
    metrics, status, owner = run.metrics(), run.status(), run.owner()
    state, reason = {"finished": ("ok", "")}.get(run.state(), ("failed", KILLED))
    if run.state() == "running" and owner is not None:
        state, reason = "running", f"running in {owner.describe()}"
    elif status and state != "ok":
        state, reason = status.get("status", "failed"), status.get("reason", "")
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    command = [str(line) for line in lines or []]
    return JobResult(int(num), folder, overrides, command, state, reason, numbers)


def varying_keys(jobs: list[JobResult]) -> list[str]:
    """Override keys (in command-line order) whose value is not the same in every job."""
    keys = list(dict.fromkeys(key for job in jobs for key in job.overrides))
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def best_first(jobs: list[JobResult]) -> list[JobResult]:
    """Good jobs by best validation accuracy (highest first), then running, then failed jobs,
    by job number."""

    def key(job: JobResult) -> tuple:
        score = job.score()
        order = {"ok": 0, "running": 1}.get(job.status, 2)
        return (order, score is None, -(score or 0.0), job.num)

    return sorted(jobs, key=key)


def read_sweep(folder: Path) -> SweepResult:
    """Every job under a sweep folder (any depth, since hydra.sweep.subdir may nest)."""
    folders = sorted(p.parent for p in folder.rglob(".hydra") if p.parent != folder)
    jobs = best_first([read_job(f) for f in folders if (f / ".hydra" / "hydra.yaml").exists()])
    return SweepResult(folder, jobs, varying_keys(jobs))


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
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[-n:])
            if sum(k == name or k.endswith("." + name) for k in keys) == 1:
                break
        names.append(name)
    return names


def _short_value(value: str) -> str:
    """Sampled floats (0.0008468008575248334) shown with 4 significant digits."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if "." in value and len(value) > 8 else value


def summary_rows(sweep: SweepResult, formatted: bool) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: full names and numbers for the CSV, short and formatted for people."""
    keys = short_names(sweep.varying) if formatted else sweep.varying
    header = ["job", *keys, "status", *METRICS, "reason"]
    if formatted:
        header[header.index("fit_seconds")] = "fit s"
    rows = []
    for job in sweep.jobs:
        values = [job.metrics.get(name) for name in METRICS]
        settings = [job.overrides.get(k, "") for k in sweep.varying]
        if formatted:
            shown = [_fmt(n, v) for n, v in zip(METRICS, values, strict=True)]
            settings = [_short_value(v) for v in settings]
        else:
            shown = ["" if v is None else round(v, 6) for v in values]
        rows.append([job.num, *settings, job.status, *shown, job.reason])
    if formatted and not sweep.failed:  # no reasons to show
        header, rows = header[:-1], [row[:-1] for row in rows]
    return header, rows


def write_summary(sweep: SweepResult) -> None:
    from lenet_cli.files import write_text_atomic

    header, rows = summary_rows(sweep, formatted=False)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*header, "folder"])
    for job, row in zip(sweep.jobs, rows, strict=True):
        writer.writerow([*row, job.folder.relative_to(sweep.folder).as_posix()])
    write_text_atomic(sweep.folder / "summary.csv", buffer.getvalue())

    header, rows = summary_rows(sweep, formatted=True)
    cell = lambda v: str(v).replace("|", "\\|")
    lines = [f"# Sweep {sweep.folder.name}: {_jobs(len(sweep.jobs))}, best first", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]  # fmt: skip
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    write_text_atomic(sweep.folder / "summary.md", "\n".join(lines) + "\n")


def summary_table(sweep: SweepResult) -> Table:
    failed = len(sweep.failed)
    title = f"sweep summary: {_jobs(len(sweep.jobs))}" + (f", {failed} failed" if failed else "")
    table = Table(title=title, title_style="bold", header_style="bold cyan")
    header, rows = summary_rows(sweep, formatted=True)
    if failed:  # reasons are printed below the table, where they have the full width
        header, rows = header[:-1], [row[:-1] for row in rows]
    for name in header:
        table.add_column(name, justify="right" if name in (*METRICS, "job", "fit s") else "left")
    for job, row in zip(sweep.jobs, rows, strict=True):
        style = "red" if job.status != "ok" else ("bold green" if job is sweep.jobs[0] else None)
        table.add_row(*(str(v) for v in row), style=style)
    return table


def _optuna_best(folder: Path) -> str | None:
    path = folder / "optimization_results.yaml"
    if not path.exists():
        return None
    results = yaml.safe_load(path.read_text()) or {}
    params = " ".join(f"{k}={v}" for k, v in (results.get("best_params") or {}).items())
    return f"Optuna best (value {results.get('best_value')}): {params}"


def every_job_failed(sweep: SweepResult):
    """The panel of a sweep in which nothing succeeded: the first job's reason and its command."""
    from lenet_cli.errors import LenetError

    first = min(sweep.jobs, key=lambda job: job.num)
    return LenetError(
        f"Every job of the sweep failed ({_jobs(len(sweep.jobs))}). The first, job {first.num}: "
        f"{first.reason or 'no reason recorded'}",
        fix="Run that job alone to see it fail in full:\n  lenet-train " + " ".join(first.command),
    )


def planned_jobs(config: DictConfig) -> tuple[int | None, list[str]]:
    """How many jobs the sweep will run (n_trials of a search, the grid's size otherwise) and
    the keys it varies."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = config.hydra.sweeper
    if "optuna" in str(sweeper.get("_target_", "")).lower():
        keys = [str(k) for k in (sweeper.get("params") or {})]
        return int(sweeper.get("n_trials") or 0) or None, keys
    # The grid: hydra.sweeper.params (an experiment's sweep), then the command line, whose value
    # for a key replaces the params' (keyed as Hydra's basic sweeper keys them, prefix and all).
    lines = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    lines += [str(o) for o in config.hydra.overrides.task]
    try:
        each = OverridesParser.create().parse_overrides(lines)
    except Exception:  # Hydra has parsed them once already; this is only for the count
        return None, []
    parsed = list({o.get_key_element(): o for o in each}.values())
    if any(o.value_type is not None and o.value_type.name == "GLOB_CHOICE_SWEEP" for o in parsed):
        return None, []  # options matched by a glob: known only once Hydra expands them
    total, keys = 1, []
    for override in parsed:
        if override.is_sweep_override() and not override.is_interval_sweep():
            total *= len(list(override.sweep_string_iterator()))
            keys.append(override.get_key_element().lstrip("+~"))
    return total, keys


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return (
        f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
    )


def _finished(folder: Path) -> tuple[int, float | None] | None:
    """(job number, val/acc_best or None) of a job folder that finished or failed, else None.
    Reads only small files: after each job of a long sweep, every folder is read."""
    run = RunFolder(folder)
    if run.state() not in ("finished", "failed"):
        return None  # running, never started, or interrupted (a resume continues it)
    head = folder.name.split("_")[0]
    score = run.metrics().get("val/acc_best")
    ok = isinstance(score, (int, float)) and not math.isnan(score)
    return (int(head) if head.isdigit() else -1), (float(score) if ok else None)


def job_line(
    sweep_folder: Path, job_folder: Path, total: int | None, keys: list[str] = (),
    started: float | None = None, done_before: int = 0, reused: bool = False,
) -> str:  # fmt: skip
    """One line for a finished job: what it varied, its status and score, the best so far,
    and the time left at the pace of this command (from `started`, when `done_before` jobs had
    finished already: a resumed sweep)."""
    finished = [f for f in map(_finished, sweep_folder.iterdir()) if f is not None]
    job = read_job(job_folder)
    done = len(finished)
    varied = " ".join(
        f"{name}={_short_value(job.overrides[key])}"
        for key, name in zip(keys, short_names(list(keys)), strict=True)
        if key in job.overrides
    )
    text = f"job {job.num} {varied}  " if varied else f"job {job.num}  "
    if reused:
        text += "[dim](finished earlier)[/] "
    if job.status == "ok":
        text += f"[green]ok[/] {_fmt('val/acc_best', job.score())}"
    else:
        text += f"[red]failed[/]: {job.reason[:60]}"
    scored = [(score, num) for num, score in finished if score is not None]
    if scored:
        score, num = max(scored, key=lambda pair: (pair[0], -pair[1]))
        text += f"  best {_fmt('val/acc_best', score)} (job {num})"
    if total and 0 < done <= total:
        text += f"  {done}/{total}"
        if done < total and started is not None and done > done_before:
            import time

            pace = (time.time() - started) / (done - done_before)
            text += f" {_duration(pace * (total - done))} left"
    return text


class SweepSummary(Callback):
    """Hydra callback (hydra.callbacks.sweep_summary): one line per finished job while the sweep
    runs, and the summary of every job when it ends."""

    def __init__(self) -> None:
        self.total: int | None = None
        self.keys: list[str] = []
        self.started: float | None = None
        self.done_before = 0  # jobs of the sweep folder finished before this command started

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import time

        from lenet_cli.console import console, short_path

        self.started = time.time()
        self.total, self.keys = planned_jobs(config)
        folder = Path(str(config.hydra.sweep.dir))
        if folder.is_dir():  # a resumed sweep
            self.done_before = sum(
                p.is_dir() and _finished(p) is not None for p in folder.iterdir()
            )
        jobs = f"{self.total} jobs" if self.total else "jobs"
        where = short_path(folder)
        console.print(f"[bold]sweep:[/] {jobs} in {where} (score: val/acc_best)", highlight=False)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from lenet_cli.console import console

        if HydraConfig.get().mode != RunMode.MULTIRUN:
            return
        sweep_folder = Path(str(config.hydra.sweep.dir))
        job_folder = Path(str(config.hydra.runtime.output_dir))
        if job_folder.is_dir():
            line = job_line(sweep_folder, job_folder, self.total, self.keys, self.started,
                            self.done_before)  # fmt: skip
            console.print(line, highlight=False)

    @staticmethod
    def _reference(sweep: SweepResult) -> None:
        """Jobs with a `reference` block (experiment=lecun98): the table next to the paper."""
        from lenet_cli.console import console, short_path
        from lenet_cli.sweeps.reference import reference_rows, reference_table, write_reference

        rows = reference_rows(sweep)
        if rows:
            write_reference(sweep.folder, rows)
            console.print(reference_table(rows))
            console.print(f"[bold]next to the paper:[/] {short_path(sweep.folder)}/reference.md")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from lenet_cli.console import console, print_error, short_path
        from lenet_cli.training.results import write_sweep_hparams

        folder = Path(str(config.hydra.sweep.dir))
        sweep = read_sweep(folder)
        if not sweep.jobs:
            console.print(f"[bold red]No job folders found in {short_path(folder)}.[/]")
            return
        write_summary(sweep)
        # TensorBoard's HParams view: one experiment for all jobs, the knobs that varied first.
        write_sweep_hparams(folder, [job.folder for job in sweep.jobs], sweep.varying)
        console.print(summary_table(sweep))
        self._reference(sweep)
        if len(sweep.failed) == len(sweep.jobs):
            print_error(every_job_failed(sweep))
            return
        for job in sweep.failed:
            console.print(f"[red]job {job.num} failed:[/] {job.reason}")
        best = sweep.jobs[0]
        if best.status == "ok":
            again = " ".join(best.command)
            console.print(f"[bold]best:[/] job {best.num}  [dim]lenet-train {again}[/]")
        optuna = _optuna_best(folder)
        if optuna:
            saved = f"{short_path(folder)}/optimization_results.yaml"
            console.print(f"[bold]{optuna}[/]\n  (saved in {saved})")
        console.print(f"[bold]summary:[/] {short_path(folder)}/summary.csv, summary.md")
        console.print(f"[bold]tensorboard:[/] tensorboard --logdir {short_path(folder)}")
        for job in sweep.running:
            console.print(
                f"[yellow]job {job.num} is still {job.reason}[/]: {short_path(job.folder)}"
            )
        if sweep.failed:
            console.print(f"[bold red]{len(sweep.failed)} of {len(sweep.jobs)} jobs failed.[/]")
