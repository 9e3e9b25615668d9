"""The checks of scripts/gpu_check.sh (which installs the bundle and prepares the data first).

Runs the real commands one after another, each with a time limit, reads what they wrote (run
folders, metrics.json, the gpu_probe-rank0.json of scripts/gpu_check_probe.py) and prints one
markdown table; exits 1 if any check failed. Only the standard library is imported here.

    python3 scripts/gpu_check.py --work DIR [--dry-run] [--budget SECONDS]

--dry-run runs the same plumbing on the CPU (trainer=cpu / ddp_cpu, 20 training batches): the
GPU-only assertions (CUDA placement, bf16/fp16, 99% accuracy) are skipped and the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_ACCURACY = 0.99  # lenet-train trainer=gpu experiment=fast
EVAL_TOLERANCE = 0.005  # lenet-eval (32-bit) vs the bf16 run's own test accuracy, same weights
CHECKS = ("environment", "fast bf16", "compile", "16-mixed", "ddp", "lenet-eval", "lenet-export")
TINY = [  # --dry-run: a few batches, one epoch
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=20",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


@dataclass
class Result:
    name: str
    command: str
    status: str = "not run"  # PASS, FAIL, SKIP, not run
    seconds: float | None = None
    test_acc: float | None = None
    fit_seconds: float | None = None
    samples_per_second: float | None = None
    memory: str = ""
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    run_dir: str | None = None

    def fail(self, why: str) -> None:
        self.problems.append(why)


class MemorySampler:
    """nvidia-smi's memory.used, polled twice a second while a command runs (GPU mode only):
    what the whole GPU holds, CUDA contexts and every process of a DDP run included."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MemorySampler:
        if self.enabled:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        query = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            try:
                out = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout
                used = sum(int(x) for x in out.split() if x.strip().isdigit())
                self.peak = max(self.peak or 0, used)
            except (subprocess.SubprocessError, OSError, ValueError):
                pass
            self._stop.wait(0.5)

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=6)


class Checker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.dry = args.dry_run
        self.work = Path(args.work).resolve()
        self.log_path = self.work / "gpu_check.log"
        self.deadline = time.monotonic() + args.budget
        self.results: list[Result] = []
        self.gpus = 0
        self.fast_run: Path | None = None
        self.fast_acc: float | None = None

    # -- running one command ----------------------------------------------------------------------
    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, result: Result, argv: list[str], limit: float) -> int | None:
        """Run argv with its output in the log; None when it ran out of time (or of budget)."""
        limit = min(limit, self.remaining())
        if limit < 5:
            result.fail("no time left in the budget")
            return None
        with open(self.log_path, "a") as log:
            log.write(f"\n===== {result.name}: {' '.join(argv)} (limit {limit:.0f} s)\n")
            log.flush()
            start = time.monotonic()
            sampler = MemorySampler(enabled=not self.dry)
            with sampler:
                process = subprocess.Popen(
                    argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.work,
                    start_new_session=True,  # DDP children too are killed on time-out
                )
                try:
                    code = process.wait(timeout=limit)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    code = None
            result.seconds = round(time.monotonic() - start, 1)
            log.write(f"===== exit code {code}, {result.seconds} s\n")
        if sampler.peak is not None:
            result.notes.append(f"nvidia-smi peak {sampler.peak:,} MiB")
        if code is None:
            result.fail(f"timed out after {limit:.0f} s")
        elif code != 0:
            result.fail(f"exit code {code}")
        return code

    def tail_of_log(self, lines: int = 25) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    # -- the checks -------------------------------------------------------------------------------
    def check_environment(self) -> None:
        result = Result("environment", "nvidia-smi; torch.cuda")
        self.results.append(result)
        probe = (
            "import json, torch, pytorch_lightning as pl, hydra, omegaconf, lenet_cli\n"
            "cuda = torch.cuda.is_available()\n"
            "print(json.dumps({'torch': torch.__version__, 'lightning': pl.__version__,\n"
            "  'hydra': hydra.__version__, 'omegaconf': omegaconf.__version__,\n"
            "  'lenet_cli': lenet_cli.__file__, 'cuda': cuda,\n"
            "  'gpus': torch.cuda.device_count() if cuda else 0,\n"
            "  'name': torch.cuda.get_device_name(0) if cuda else None,\n"
            "  'bf16': bool(cuda and torch.cuda.is_bf16_supported())}))\n"
        )
        start = time.monotonic()
        try:
            out = subprocess.run(
                [sys.executable, "-c", probe],
                capture_output=True,
                text=True,
                timeout=120,
                cwd=self.work,  # not the repository: lenet_cli must come from the installed copy
            )
        except subprocess.TimeoutExpired:
            result.fail("python -c 'import torch ...' timed out")
            return
        result.seconds = round(time.monotonic() - start, 1)
        with open(self.log_path, "a") as log:
            log.write(f"\n===== environment\n{out.stdout}{out.stderr}")
        if out.returncode != 0:
            result.fail("importing torch / lightning / hydra / lenet_cli failed")
            result.notes.append(out.stderr.strip().splitlines()[-1] if out.stderr else "")
            return
        info = json.loads(out.stdout.strip().splitlines()[-1])
        self.gpus = int(info["gpus"])
        result.notes.append(
            f"torch {info['torch']}, lightning {info['lightning']}, hydra {info['hydra']}, "
            f"omegaconf {info['omegaconf']}; lenet_cli from {info['lenet_cli']}"
        )
        if os.environ.get("GPU_CHECK_INSTALLED"):
            result.notes.append(os.environ["GPU_CHECK_INSTALLED"])
        smi = shutil.which("nvidia-smi")
        if smi:
            query = "--query-gpu=name,memory.total,driver_version"
            out = subprocess.run(
                [smi, query, "--format=csv,noheader"], capture_output=True, text=True
            )
            result.notes.append("nvidia-smi: " + "; ".join(out.stdout.strip().splitlines()))
        if self.dry:
            result.notes.append(f"dry run: CUDA {'visible' if info['cuda'] else 'not visible'}")
            return
        if not smi:
            result.fail("nvidia-smi not found")
        if not info["cuda"]:
            result.fail("torch.cuda.is_available() is False")
        else:
            result.notes.append(f"{self.gpus} x {info['name']}, bf16 supported: {info['bf16']}")
            if not info["bf16"]:
                result.fail("no bf16 on this GPU (trainer=gpu falls back to 16-mixed)")

    def train(
        self,
        name: str,
        overrides: list[str],
        limit: float,
        assess: Callable[[Result, dict, dict], None],
        tiny: list[str] | None = None,
    ) -> Result:
        result = Result(name, "lenet-train " + " ".join(overrides))
        self.results.append(result)
        root = self.work / "runs" / name
        plumbing = [
            f"paths.output_root={root}",
            "data.download=false",
            "+callbacks.gpu_probe._target_=gpu_check_probe.GpuProbe",
            "+callbacks.gpu_probe.output_dir=${paths.output_dir}",
        ]
        extra = (tiny if tiny is not None else TINY) if self.dry else []
        code = self.run(result, ["lenet-train", *overrides, *extra, *plumbing], limit)
        if result.seconds is None:  # not started: no time left
            return result
        folders = sorted(p for p in root.glob("*/*") if p.is_dir())
        if len(folders) != 1:
            result.fail(f"{len(folders)} run folders under {root}")
        if not folders:
            return result
        run = folders[-1]
        result.run_dir = str(run)
        metrics = _read_json(run / "metrics.json")
        probe = _read_json(run / "gpu_probe-rank0.json")
        if code == 0 and metrics is None:
            result.fail("no metrics.json")
        if code == 0 and probe is None:
            result.fail("no gpu_probe-rank0.json (the probe callback did not run)")
        metrics, probe = metrics or {}, probe or {}
        result.test_acc = metrics.get("test/acc")
        result.fit_seconds = metrics.get("fit_seconds")
        result.samples_per_second = metrics.get("train_samples_per_second")
        if probe.get("cuda_peak_allocated_mib") is not None:
            result.memory = (
                f"{probe['cuda_peak_allocated_mib']:,.0f} / "
                f"{probe['cuda_peak_reserved_mib']:,.0f} MiB"
            )
        elif probe.get("peak_rss_mib") is not None:
            result.memory = f"RSS {probe['peak_rss_mib']:,.0f} MiB"
        if probe:
            batches = probe["batches"]
            result.notes.append(
                f"{probe['strategy']} x{probe['world_size']} on {probe['root_device']} "
                f"({probe['device_name']}), {probe['precision']}; splits on "
                + ",".join(sorted(set(probe["splits"].values())) or ["?"])
                + f"; batches off the device: train {batches['train']['off_device']}/"
                f"{batches['train']['batches']}, eval {batches['eval']['off_device']}/"
                f"{batches['eval']['batches']}"
            )
            if probe["train_conv_dtypes"]:
                result.notes.append("conv output " + "/".join(probe["train_conv_dtypes"]))
        if code == 0 and probe:
            assess(result, metrics, probe)
        return result

    # -- what each run must show ------------------------------------------------------------------
    def on_gpu(self, result: Result, probe: dict, dtype: str | None) -> None:
        """The data on the GPU, no batch copied from the host, and the expected precision."""
        if self.dry:
            result.notes.append("GPU assertions skipped (dry run)")
            return
        if not str(probe["root_device"]).startswith("cuda"):
            result.fail(f"trained on {probe['root_device']}, not cuda")
        off = [k for k, v in probe["splits"].items() if not v.startswith("cuda")]
        if off or not probe["splits"]:
            result.fail(f"splits not on the GPU: {off or 'none recorded'}")
        train = probe["batches"]["train"]
        if train["batches"] == 0:
            result.fail("no training batch seen by the probe")
        for phase in ("train", "eval"):
            if probe["batches"][phase]["off_device"]:
                result.fail(
                    f"{probe['batches'][phase]['off_device']} {phase} batches came from the host"
                )
        if dtype and not probe["compiled"] and probe["train_conv_dtypes"] != [dtype]:
            result.fail(f"conv output {probe['train_conv_dtypes']}, expected [{dtype}]")

    def assess_fast(self, result: Result, metrics: dict, probe: dict) -> None:
        self.on_gpu(result, probe, "bfloat16")
        acc = metrics.get("test/acc")
        if self.dry:
            result.notes.append(f"accuracy >= {MIN_ACCURACY:.0%} not asserted (dry run)")
            return
        if acc is None or acc < MIN_ACCURACY:
            result.fail(f"test/acc {acc} < {MIN_ACCURACY}")
        if probe["precision"] != "bf16-mixed":
            result.fail(f"precision {probe['precision']}, expected bf16-mixed")

    def assess_compile(self, result: Result, metrics: dict, probe: dict) -> None:
        self.on_gpu(result, probe, None)
        if not probe["compiled"]:
            result.fail("the network was not compiled")
        if not probe["channels_last"]:
            result.fail("the weights are not channels-last")

    def assess_fp16(self, result: Result, metrics: dict, probe: dict) -> None:
        self.on_gpu(result, probe, "float16")
        if not self.dry and probe["precision"] != "16-mixed":
            result.fail(f"precision {probe['precision']}, expected 16-mixed")

    def assess_ddp(self, result: Result, metrics: dict, probe: dict) -> None:
        self.on_gpu(result, probe, "bfloat16")
        expected = 2 if self.dry else self.gpus  # ddp_cpu: 2 processes; ddp: every visible GPU
        if probe["world_size"] != expected or "DDP" not in probe["strategy"]:
            result.fail(f"{probe['strategy']} x{probe['world_size']}, expected DDP x{expected}")
        extra = sorted(Path(result.run_dir or ".").glob("gpu_probe-rank*.json"))
        result.notes.append(f"one run folder, probes from {len(extra)} rank(s)")

    def evaluate(self) -> None:
        overrides = ["trainer.accelerator=" + ("cpu" if self.dry else "gpu"), "trainer.devices=1"]
        result = Result(
            "lenet-eval", "lenet-eval ckpt_path=<fast>/best.ckpt " + " ".join(overrides)
        )
        self.results.append(result)
        checkpoint = self._fast_checkpoint(result)
        if checkpoint is None:
            return
        root = self.work / "runs" / "eval"
        argv = [
            "lenet-eval",
            f"ckpt_path={checkpoint}",
            *overrides,
            f"paths.output_root={root}",
            "data.download=false",
        ]
        code = self.run(result, argv, 90)
        if result.seconds is None:
            return
        folders = sorted(p for p in root.glob("*/*") if p.is_dir())
        metrics = _read_json(folders[-1] / "metrics.json") if folders else None
        if code == 0 and (len(folders) != 1 or metrics is None):
            state = "missing" if metrics is None else "written"
            result.fail(f"{len(folders)} eval folders, metrics.json {state}")
        if metrics:
            result.run_dir = str(folders[-1])
            result.test_acc = metrics.get("test/acc")
            result.notes.append(
                f"{metrics.get('test/samples')} test images, "
                f"{metrics.get('test_samples_per_second')} images/s"
            )
            if self.dry:
                result.notes.append("accuracy comparison skipped (dry run: a 20-batch model)")
            elif self.fast_acc is not None and result.test_acc is not None:
                gap = abs(result.test_acc - self.fast_acc)
                result.notes.append(f"vs the run's own test/acc {self.fast_acc:.4f}")
                if gap > EVAL_TOLERANCE:
                    result.fail(f"eval accuracy differs from the run's by {gap:.4f}")

    def export(self) -> None:
        output = self.work / "lenet.onnx"
        result = Result("lenet-export", "lenet-export <fast>/best.ckpt --format onnx")
        self.results.append(result)
        checkpoint = self._fast_checkpoint(result)
        if checkpoint is None:
            return
        argv = ["lenet-export", str(checkpoint), "--format", "onnx", "--output", str(output)]
        code = self.run(result, argv, 120)
        if code == 0:
            if output.is_file():
                result.notes.append(f"{output.name}: {output.stat().st_size / 1024:,.0f} KiB")
            else:
                result.fail("no ONNX file written")

    def _fast_checkpoint(self, result: Result) -> Path | None:
        checkpoint = self.fast_run / "checkpoints" / "best.ckpt" if self.fast_run else None
        if checkpoint is None or not checkpoint.is_file():
            result.fail("no checkpoint from the fast run")
            return None
        return checkpoint

    # -- all of it --------------------------------------------------------------------------------
    def run_all(self) -> None:
        gpu, ddp = ("cpu", "ddp_cpu") if self.dry else ("gpu", "ddp")
        self.check_environment()
        if self.results[-1].problems:
            self._finish(self.results[-1])
            return  # no GPU: every other check would fail the same way
        self._finish(self.results[-1])
        fast = self.train("fast bf16", [f"trainer={gpu}", "experiment=fast"], 120, self.assess_fast)
        self._finish(fast)
        if fast.run_dir:
            self.fast_run = Path(fast.run_dir)
            self.fast_acc = fast.test_acc
        epoch = ["trainer.max_epochs=1"]
        compiled = ["model.compile=true", "model.channels_last=true"]
        self._finish(
            self.train(
                "compile",
                [f"trainer={gpu}", "experiment=fast", *compiled, *epoch],
                120,
                self.assess_compile,
            )
        )
        # Lightning has no float16 autocast on the CPU: the dry run uses bf16 there.
        precision = "trainer.precision=" + ("bf16-mixed" if self.dry else "16-mixed")
        self._finish(
            self.train(
                "16-mixed",
                [f"trainer={gpu}", "experiment=fast", precision, *epoch],
                90,
                self.assess_fp16,
            )
        )
        self._finish(
            self.train(
                "ddp",
                [f"trainer={ddp}", "experiment=fast", *epoch],
                120,
                self.assess_ddp,
            )
        )
        self.evaluate()
        self._finish(self.results[-1])
        self.export()
        self._finish(self.results[-1])

    def _finish(self, result: Result) -> None:
        if result.status == "not run":
            result.status = "FAIL" if result.problems else "PASS"
        print(
            f"[{result.status}] {result.name} ({result.seconds} s): "
            + "; ".join(result.problems or result.notes[-1:]),
            flush=True,
        )
        if result.problems and self.log_path.exists():
            print(_indent(self.tail_of_log()), flush=True)

    # -- the report -------------------------------------------------------------------------------
    def table(self) -> str:
        mode = (
            "DRY RUN on the CPU (trainer=cpu / ddp_cpu, 1 epoch of 20 batches): plumbing only; "
            "the GPU assertions (CUDA placement, bf16/fp16, >= 99% accuracy) were skipped."
            if self.dry
            else "GPU mode: every assertion made."
        )
        lines = [
            f"## lenet-cli GPU check ({time.strftime('%Y-%m-%d %H:%M')})",
            "",
            mode,
            "",
            "| check | command | status | wall s | test acc | fit s | samples/s | "
            "peak CUDA alloc / reserved | notes |",
            "|---|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in self.results:
            acc = f"{r.test_acc:.4f}" if r.test_acc is not None else ""
            fit = f"{r.fit_seconds:.1f}" if r.fit_seconds is not None else ""
            sps = f"{r.samples_per_second:,.0f}" if r.samples_per_second is not None else ""
            seconds = f"{r.seconds:.1f}" if r.seconds is not None else ""
            notes = "; ".join([*(f"**{p}**" for p in r.problems), *r.notes]).replace("|", "/")
            lines.append(
                f"| {r.name} | `{r.command}` | {r.status} | {seconds} | {acc} | {fit} | {sps} "
                f"| {r.memory} | {notes} |"
            )
        failed = [r.name for r in self.results if r.status != "PASS"]
        missing = [name for name in CHECKS if name not in {r.name for r in self.results}]
        verdict = "FAILED: " + ", ".join(failed + missing) if failed or missing else "all passed"
        lines += ["", f"Result: {verdict}"]
        return "\n".join(lines) + "\n"

    def ok(self) -> bool:
        return len(self.results) == len(CHECKS) and all(r.status == "PASS" for r in self.results)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="a scratch folder (runs land there)")
    parser.add_argument("--dry-run", action="store_true", help="the plumbing on the CPU")
    parser.add_argument("--budget", type=float, default=None, help="seconds for all checks")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="where to copy the report")
    args = parser.parse_args()
    if args.budget is None:
        args.budget = 900 if args.dry_run else 270
    checker = Checker(args)
    checker.log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        checker.run_all()
    finally:
        table = checker.table()
        print("\n" + table)
        (checker.work / "gpu_check.md").write_text(table)
        summary = [r.__dict__ for r in checker.results]
        (checker.work / "gpu_check.json").write_text(json.dumps(summary, indent=2) + "\n")
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            for name in ("gpu_check.md", "gpu_check.json", "gpu_check.log"):
                if (checker.work / name).exists():
                    shutil.copy(checker.work / name, out / name)
    return 0 if checker.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
