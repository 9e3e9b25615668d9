"""The rows of the GPU check (docs/gpu.md); scripts/gpu_check.sh installs the bundle and unpacks
the data first, then runs this with the standard library alone.

    python3 scripts/gpu_check.py --work DIR --out DIR [--dry-run] [--rows a,b] [--budget S]

Each row runs real commands with a time limit, reads what they wrote (metrics.json and the
gpu_probe-rank0.json of scripts/gpu_check_probe.py) and is written to --out (gpu_check.md,
gpu_check.json; the commands' output in gpu_check.log) as soon as it ends. Exit code 1 if a row
failed or did not run. --dry-run: the same rows on the CPU (trainer=cpu, ddp_cpu), 20 training
batches a run, without the assertions that need a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# name: time limit (s). compile's is kept for it whatever the rows before it take.
LIMITS = {
    "environment": 60,
    "accuracy": 150,
    "channels-last": 0,  # read from the accuracy runs
    "precisions": 120,
    "sync-free step": 90,
    "deterministic": 90,
    "ddp": 75,
    "ddp_fork": 75,
    "lenet-eval": 60,
    "compile": 180,  # three cold compiles: training, validation, the last (smaller) batch
}
PROBE = "gpu_probe-rank0.json"  # written by rank 0 of each run (scripts/gpu_check_probe.py)
MIN_MEAN_ACCURACY = 0.99  # experiment=fast, three seeds
DTYPES = {"16-mixed": "float16", "bf16-mixed": "bfloat16", "bf16-true": "bfloat16"}
DTYPES |= {"16-true": "float16", "64-true": "float64"}
TINY = ["trainer.max_epochs=1", "trainer.limit_train_batches=20"]
TINY += ["trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]


@dataclass
class Row:
    name: str
    command: str = ""
    status: str = "not run"
    seconds: float = 0.0
    result: str = ""
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.dry, self.work, self.out = args.dry_run, Path(args.work), Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = self.out / "gpu_check.log"
        self.log.write_text("")
        self.deadline = time.monotonic() + args.budget
        self.rows: list[Row] = []
        self.gpus, self.accuracy_runs, self.selected = 0, [], list(LIMITS)
        self.gpu, self.ddp_trainer = ("cpu", "ddp_cpu") if self.dry else ("gpu", "ddp")

    # -- running commands -------------------------------------------------------------------------
    def run(self, row: Row, argv: list[str], env: dict[str, str] | None = None) -> int | None:
        """argv's exit code, its output appended to the log; None when out of time."""
        later = LIMITS["compile"] if row.name != "compile" and "compile" in self.selected else 0
        limit = min(LIMITS[row.name], self.deadline - time.monotonic() - later)
        if limit < 10:
            row.problems.append("no time left in the budget")
            return None
        row.command = row.command or " ".join(argv)
        with open(self.log, "a") as log:
            log.write(f"\n===== {row.name}: {' '.join(argv)} (limit {limit:.0f} s)\n")
            log.flush()
            start = time.monotonic()
            # A session of its own: DDP's processes are killed with it on time-out.
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.work,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
            try:
                code = process.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                code = None
                row.problems.append(f"timed out after {limit:.0f} s")
            row.seconds += round(time.monotonic() - start, 1)
            log.write(f"===== exit code {code}\n")
        if code:
            row.problems.append(f"exit code {code}")
        return code

    def probe(self, row: Row, what: str) -> dict[str, Any]:
        row.command = f"python3 scripts/gpu_check_probe.py {what}"
        probe, out = Path(__file__).with_name("gpu_check_probe.py"), self.work / f"{what}.json"
        return (
            _read(out) if self.run(row, [sys.executable, str(probe), what, str(out)]) == 0 else {}
        )

    def train(self, row: Row, overrides: list[str], command: str = "lenet-train") -> list[dict]:
        """Run lenet-train (or lenet-eval); each run folder's metrics.json and probe."""
        root = self.work / "runs" / row.name.replace(" ", "_")
        plumbing = [f"paths.output_root={root}", "data.download=false"]
        if command == "lenet-train":
            plumbing += ["+callbacks.gpu_probe._target_=gpu_check_probe.GpuProbe"]
            plumbing += ["+callbacks.gpu_probe.output_dir=${paths.output_dir}"]
        tiny = TINY if self.dry and command == "lenet-train" else []
        replaced = {t.split("=")[0] for t in tiny}  # by the dry run's
        overrides = [o for o in overrides if o.split("=")[0] not in replaced]
        row.command = " ".join([command, *overrides, *tiny])
        env = {"TORCHINDUCTOR_CACHE_DIR": str(root / "inductor")}  # cold: a new one per row
        self.run(row, [command, *overrides, *tiny, *plumbing], env)
        return [
            {"folder": m.parent, "metrics": _read(m), "probe": _read(m.with_name(PROBE))}
            for m in sorted(root.rglob("metrics.json"))
        ]

    def on_gpu(self, row: Row, run: dict, dtype: str | None = None) -> None:
        """Trained on the GPU from data kept there, in the expected dtype."""
        probe = run["probe"]
        if not probe:
            row.problems.append(f"no {PROBE} in {run['folder'].name}")
            return
        if dtype and probe["conv"].get("dtype") != dtype:
            row.problems.append(
                f"{probe['precision']}: convolutions in {probe['conv'].get('dtype')}"
            )
        if self.dry:
            return
        off = [f"{k} on {v}" for k, v in probe["splits"].items() if not v.startswith("cuda")]
        moved = {k: v["off_device"] for k, v in probe["batches"].items() if v["off_device"]}
        if not probe["root_device"].startswith("cuda") or off or moved or not probe["splits"]:
            row.problems.append(f"not all on the GPU: {probe['root_device']}, {off}, {moved}")

    # -- the rows ---------------------------------------------------------------------------------
    def environment(self, row: Row) -> None:
        info = self.probe(row, "environment")
        if not info:
            return
        self.gpus = info["gpus"]
        row.result = f"{info['gpus']} x {info['name']}, bf16 {info['bf16']}"
        row.notes.append(
            f"Python {info['python']}, torch {info['torch']}, Lightning {info['lightning']}, "
            f"Hydra {info['hydra']}; {info['lenet_cli']}"
        )
        row.problems += [f"requirement not met: {r}" for r in info["unmet"]]
        row.problems += [f"plugin warning: {w}" for w in info["plugin_warnings"]]
        if not self.dry and not (info["gpus"] and info["bf16"]):
            row.problems.append("no CUDA GPU with native bf16")

    def accuracy(self, row: Row) -> None:
        runs = self.train(row, ["-m", f"trainer={self.gpu}", "experiment=fast", "seed=1,2,3"])
        self.accuracy_runs = [r for r in runs if r["metrics"]]
        accs = [r["metrics"]["test/acc"] for r in self.accuracy_runs]
        if len(accs) != 3:
            row.problems.append(f"{len(accs)} of 3 runs finished")
            return
        mean = sum(accs) / 3
        fits = ", ".join(f"{r['metrics']['fit_seconds']:.1f}" for r in self.accuracy_runs)
        row.result = f"mean test/acc {mean:.4f} ({', '.join(f'{a:.4f}' for a in accs)})"
        row.notes.append(f"fit s {fits}")
        for run in self.accuracy_runs:
            self.on_gpu(row, run, None if self.dry else "bfloat16")
        peak = max(r["probe"].get("cuda_peak_mib") or 0 for r in self.accuracy_runs)
        row.notes += [f"peak CUDA memory {peak} MiB"] if peak else []
        if not self.dry and mean < MIN_MEAN_ACCURACY:
            row.problems.append(f"mean test/acc {mean:.4f} < {MIN_MEAN_ACCURACY}")

    def channels_last(self, row: Row) -> None:
        row.command = "(the accuracy runs: model.channels_last=true)"
        convs = [r["probe"].get("conv") for r in self.accuracy_runs]
        if not convs or not all(convs):
            row.problems.append("no convolution recorded by the accuracy runs")
            return
        row.result = "input and weight channels-last"
        if not all(c["input_channels_last"] and c["weight_channels_last"] for c in convs):
            row.problems.append(f"not channels-last: {convs}")
        row.notes.append("first convolution with several input channels, while training")

    def precisions(self, row: Row) -> None:
        values = "16-mixed,bf16-true,16-true,64-true"  # as users run them: pictures on
        args = [f"trainer={self.gpu}", "model=modern", "trainer.max_epochs=1"]
        args += ["trainer.limit_train_batches=100", "++optimizer.eps=1e-4"]
        runs = self.train(row, ["-m", *args, f"trainer.precision={values}"])
        done = {r["probe"].get("precision"): r for r in runs if r["probe"]}
        row.result = ", ".join(f"{p} {r['metrics']['test/acc']:.4f}" for p, r in done.items())
        if len(done) != 4:  # (on the CPU Lightning trains 16-mixed as bf16-mixed)
            row.problems.append(f"{len(done)} of 4 precisions trained: {sorted(done)}")
        for precision, run in done.items():
            self.on_gpu(row, run, DTYPES.get(precision))

    def sync_free_step(self, row: Row) -> None:
        found = self.probe(row, "steps")
        row.result = f"{sum(v == 'ok' for v in found.values())} of {len(found)} models"
        row.problems += [f"{name}: {why}" for name, why in found.items() if why != "ok"]
        if self.dry:
            row.notes.append("CPU: torch.cuda.set_sync_debug_mode not applied")

    def deterministic(self, row: Row) -> None:
        args = [f"trainer={self.gpu}", "experiment=fast", "trainer.max_epochs=1"]
        args += ["trainer.limit_train_batches=100", "trainer.deterministic=true", "seed=7,7"]
        runs = self.train(row, ["-m", *args])
        keys = ("train/loss", "val/loss", "test/acc")
        values = [tuple(r["metrics"].get(k) for k in keys) for r in runs]
        shown = [", ".join(f"{v:.6g}" for v in run if v is not None) for run in values]
        row.result = f"{', '.join(keys)}: " + " / ".join(shown)
        if len(values) != 2 or values[0] != values[1]:
            row.problems.append("two runs with one seed differ")
        if any(r["probe"].get("cudnn_benchmark") is not False for r in runs):
            row.problems.append("cuDNN benchmark on")

    def ddp(self, row: Row) -> None:
        runs = self.train(
            row, [f"trainer={self.ddp_trainer}", "experiment=fast", "trainer.max_epochs=1"]
        )
        expected = 2 if self.dry else self.gpus
        if len(runs) != 1:
            row.problems.append(f"{len(runs)} run folders")
            return
        probe = runs[0]["probe"]
        row.result = f"{probe.get('strategy')} x{probe.get('world_size')}"
        self.on_gpu(row, runs[0])
        if probe.get("strategy") != "DDPStrategy" or probe.get("world_size") != expected:
            row.problems.append(f"expected DDPStrategy x{expected}")
        if expected == 1:
            row.notes.append(
                "one GPU shows DDP's wrapper, an NCCL group of one and its all-reduces on the "
                "device; not the launch of several processes, gradients averaged between them, "
                "the test split across ranks or rank 0 writing alone (tests/test_distributed.py "
                "shows those with 2 CPU processes)"
            )

    def ddp_fork(self, row: Row) -> None:
        devices = "trainer.devices=2" if self.dry else "trainer.devices=1"
        args = [f"trainer={self.gpu}", devices, "trainer.strategy=ddp_fork", "experiment=fast"]
        runs = self.train(row, [*args, "trainer.max_epochs=1"])
        if len(runs) != 1:
            row.problems.append(f"{len(runs)} run folders")
            return
        probe, epochs = runs[0]["probe"], runs[0]["metrics"].get("epochs")
        row.result = f"{probe.get('strategy')} x{probe.get('world_size')}, epochs {epochs}"
        row.notes.append("trains in forked processes: CUDA must be untouched before the fork")
        self.on_gpu(row, runs[0])

    def lenet_eval(self, row: Row) -> None:
        if not self.accuracy_runs:
            row.problems.append("needs the accuracy row's checkpoint")
            return
        first = self.accuracy_runs[0]
        ckpt = first["folder"] / "checkpoints" / "best.ckpt"
        args = [f"ckpt_path='{ckpt}'", f"trainer.accelerator={self.gpu}", "trainer.devices=1"]
        runs = self.train(row, args, command="lenet-eval")
        if len(runs) != 1:
            row.problems.append(f"{len(runs)} eval folders")
            return
        acc, trained = runs[0]["metrics"].get("test/acc", -1.0), first["metrics"]["test/acc"]
        row.result = f"test/acc {acc:.4f} in 32-true, {trained:.4f} in the run's own test"
        if not self.dry and abs(acc - trained) > 0.005:
            row.problems.append("more than 0.5 points apart")

    def compile(self, row: Row) -> None:
        args = [f"trainer={self.gpu}", "experiment=fast", "model.compile=true"]
        runs = self.train(row, [*args, "trainer.max_epochs=1"])
        cache = self.work / "runs" / "compile" / "inductor"
        files = sum(1 for p in cache.rglob("*") if p.is_file()) if cache.is_dir() else 0
        row.notes.append(f"{files} files in the fresh Inductor cache")
        if runs and runs[0]["metrics"]:
            m = runs[0]["metrics"]
            row.result = f"test/acc {m['test/acc']:.4f}, fit {m['fit_seconds']:.1f} s (cold)"
        if not files:
            row.problems.append("nothing compiled")

    # -- the report -------------------------------------------------------------------------------
    def save(self) -> None:
        mode = "dry run on the CPU: no GPU assertion" if self.dry else "GPU"
        lines = [
            f"## lenet-cli GPU check, {time.strftime('%Y-%m-%d %H:%M')} ({mode})",
            "",
            "| row | command | status | s | result | notes |",
            "|---|---|---|---:|---|---|",
        ]
        for r in self.rows:
            notes = "; ".join([*(f"**{p}**" for p in r.problems), *r.notes]).replace("|", "/")
            cells = [r.name, f"`{r.command}`", r.status, f"{r.seconds:.0f}", r.result, notes]
            lines.append("| " + " | ".join(cells) + " |")
        for name, text in (("md", "\n".join(lines) + "\n"), ("json", _dumps(self.rows))):
            part = self.out / f"gpu_check.{name}.part"
            part.write_text(text)
            part.replace(self.out / f"gpu_check.{name}")

    def run_rows(self, selected: list[str]) -> bool:
        self.selected = selected
        for name in selected:
            row = Row(name)
            self.rows.append(row)
            getattr(self, name.replace(" ", "_").replace("-", "_"))(row)
            row.status = "FAIL" if row.problems else "PASS"
            said = "; ".join(row.problems or [row.result])
            print(f"[{row.status}] {name} ({row.seconds:.0f} s): {said}", flush=True)
            self.save()  # now: a timeout later still leaves this row behind
            if row.problems and self.log.stat().st_size:
                tail = self.log.read_text(errors="replace").splitlines()[-15:]
                print("\n".join("    " + line for line in tail), flush=True)
            if name == "environment" and row.problems:
                break  # every other row would fail the same way
        return all(r.status == "PASS" for r in self.rows) and len(self.rows) == len(selected)


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _dumps(rows: list[Row]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=1, default=str) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="a scratch folder (runs land there)")
    parser.add_argument("--out", required=True, help="where the table and log are written")
    parser.add_argument("--dry-run", action="store_true", help="the same rows on the CPU")
    parser.add_argument("--rows", help="some rows, comma-separated (environment always runs)")
    parser.add_argument("--budget", type=float, help="seconds for every row together")
    args = parser.parse_args()
    args.budget = args.budget or (1500 if args.dry_run else 440)
    wanted = set(args.rows.split(",") if args.rows else LIMITS) | {"environment"}
    if wanted - set(LIMITS):
        parser.error(f"unknown rows {sorted(wanted - set(LIMITS))}; the rows: {', '.join(LIMITS)}")
    if wanted & {"channels-last", "lenet-eval"}:
        wanted.add("accuracy")  # they read its runs
    rows = [name for name in LIMITS if name in wanted]
    check = Check(args)
    ok = check.run_rows(rows)
    print("\n" + (check.out / "gpu_check.md").read_text())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
