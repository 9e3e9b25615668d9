"""Benchmark lenet-train against hand-written PyTorch loops on this machine, side by side.

    LENET_DATA_DIR=../shared/data python scripts/bench.py            # everything (~30 minutes)
    LENET_DATA_DIR=../shared/data python scripts/bench.py --only overhead measures
    LENET_DATA_DIR=../shared/data python scripts/bench.py --only sweep --sweep-jobs 8 64

Prints one table per part with the reference next to the measurement, and exits non-zero when a
target is missed:
  overhead  one epoch of lenet-train (model=modern, Adam 1e-3, no validation; progress bar,
            TensorBoard and pictures on) vs a bare Lightning loop over the same in-memory batches
            (minimal LightningModule, no logger or callbacks) and a plain PyTorch loop, all with
            the same loss (label smoothing 0.1), fit seconds, --rounds runs each taking turns,
            every loop in a fresh process with lenet-train's process settings
              batch 64:  lenet-train within 1.05x of the bare Lightning loop (what lenet-cli adds)
              batch 256: time per training sample within 1.10x of the plain loop
  measures  each speed measure lenet-cli keeps, switched off and on (taking turns, --rounds
            each): it stays only if it saves >= 2% (progress bar, malloc settings, the NVML
            check, the exit without interpreter teardown)
  fast      `lenet-train experiment=fast`, 3 seeds, whole command wall time vs the notebook-style
            loop (ToTensor + DataLoader, 5 epochs)     target >= 99.0% mean, time <= 0.25x
  startup   `lenet-train --help` <= 1.0 s and `--cfg job` <= 1.5 s
  default   the default run (`lenet-train`, 20 epochs of classic): peak RSS <= 1.5 GB, and
            the cost of the TensorBoard pictures (reported)
  scaling   samples/s at batch 64, 256, 1024 and with 1 vs 2 threads; a 4-job sweep serial vs
            hydra/launcher=joblib with 2 jobs                                 (reported only)
  sweep     `lenet-train -m seed=range(N)` of tiny jobs (3 training batches, one validation and
            one test batch, logger.images=false) under the default launcher, N = 8, 64, 200
            (--sweep-jobs; 10-20 minutes here): the sweep process's peak RSS within 50 MB of the
            8-job sweep's, and each job's cost beyond its own fit_seconds <= 0.5 s
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

import torch
from rich.console import Console
from rich.table import Table
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
console = Console(width=None if sys.stdout.isatty() else 150)
PARTS = ("overhead", "measures", "fast", "startup", "default", "scaling", "sweep")


def data_root() -> Path:
    root = os.environ.get("LENET_DATA_DIR")
    if not root or not (Path(root) / "MNIST" / "raw").is_dir():
        sys.exit("Set LENET_DATA_DIR to the folder holding MNIST/raw (e.g. ../shared/data).")
    return Path(root).resolve()


def lenet_train(
    *overrides: str, cwd: Path, command: str = "lenet-train", env: dict[str, str] | None = None
) -> tuple[dict, float, int]:
    """Run lenet-train; return (metrics.json, wall seconds, peak RSS in bytes of the child)."""
    before = {p for p in cwd.glob("outputs/*/*")}
    start = time.perf_counter()
    result = subprocess.run(
        [str(BIN / command), *overrides], cwd=cwd, capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        console.print(result.stderr[-3000:])
        raise SystemExit(f"lenet-train {' '.join(overrides)} failed")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    new = sorted({p for p in cwd.glob("outputs/*/*")} - before)
    metrics = json.loads((new[-1] / "metrics.json").read_text()) if new else {}
    return metrics, wall, rss


def load_mnist(root: Path):
    from lenet_cli.cli.process import use_plain_cuda_check
    from lenet_cli.training.mnist_files import ensure_files, load_split

    # lenet_cli.training imports Lightning, which sets PYTORCH_NVML_BASED_CUDA_CHECK=1: without
    # undoing that, each optimiser step of the plain loops here (and of every lenet-train
    # started from here, which inherits the variable) would pay a failed NVML lookup.
    use_plain_cuda_check("auto")
    raw = ensure_files(root, "MNIST", download=False)
    return load_split(raw, "train", 10), load_split(raw, "test", 10)


def modern_lenet() -> torch.nn.Module:
    from lenet_cli.models import LeNet

    return LeNet(activation="relu", pooling="max", input_padding=2, mean=0.1307, std=0.3081)


# One training epoch of the modern LeNet-5 at a constant learning rate, no validation, no test.
ONE_EPOCH = (
    "model=modern",
    "scheduler=none",
    "trainer.max_epochs=1",
    "++trainer.limit_val_batches=0",
    "test=false",
)
LABEL_SMOOTHING = 0.1  # lenet-train's default loss: the references compute the same loss
TRAIN_IMAGES = 55_000  # lenet-train's training split (5,000 of MNIST's 60,000 validate)


def batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int):
    """One epoch of shuffled batches sliced from in-memory uint8 tensors, as floats in [0, 1]."""
    order = torch.randperm(len(labels))
    for i in range(0, len(order), batch_size):
        index = order[i : i + batch_size]
        yield images[index].float().div_(255), labels[index]


def plain_loop(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int = 64, epochs: int = 1
) -> float:
    """The hand-written reference: in-memory uint8 tensors, one shuffle a epoch, Adam 1e-3."""
    torch.manual_seed(0)
    net = modern_lenet()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in batches(images, labels, batch_size):
            loss = F.cross_entropy(net(x), y, label_smoothing=LABEL_SMOOTHING)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def bare_lightning_loop(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int = 64, nvml_check: bool = False
) -> float:
    """Lightning's own floor: the plain loop's model, batches and loss in a minimal
    LightningModule (training_step = forward + loss), with no logger, callbacks, checkpoints or
    progress bar; timed like lenet-train's fit_seconds. Run in a child process (see main).
    nvml_check: keep the PYTORCH_NVML_BASED_CUDA_CHECK=1 that Lightning sets on import."""
    import logging
    import warnings

    import pytorch_lightning as pl

    from lenet_cli.cli.process import use_plain_cuda_check

    if not nvml_check:
        use_plain_cuda_check("auto")  # as lenet-train does
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")

    class Epoch:
        def __len__(self) -> int:
            return -(-len(labels) // batch_size)

        def __iter__(self):
            return batches(images, labels, batch_size)

    class Minimal(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.seconds = modern_lenet(), 0.0

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self.net(x), y, label_smoothing=LABEL_SMOOTHING)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

        def on_train_epoch_start(self) -> None:
            self.start = time.perf_counter()

        def on_train_end(self) -> None:
            self.seconds = time.perf_counter() - self.start

    torch.manual_seed(0)
    module = Minimal()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=Epoch())
    return module.seconds


def notebook_loop(root: Path, epochs: int = 5) -> tuple[float, float]:
    """The course-notebook reference: torchvision MNIST + ToTensor/Normalize + DataLoader."""
    from torchvision import datasets, transforms

    start = time.perf_counter()
    torch.manual_seed(0)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train = datasets.MNIST(str(root), train=True, download=False, transform=tf)
    test = datasets.MNIST(str(root), train=False, download=False, transform=tf)
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True)
    net = modern_lenet()
    net.features.input.mean.fill_(0.0)  # the transform already normalised
    net.features.input.std.fill_(1.0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        net.train()
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()
    correct = 0
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(test, batch_size=1000):
            correct += (net(x).argmax(1) == y).sum().item()
    return time.perf_counter() - start, correct / len(test)


class Report:
    def __init__(self) -> None:
        self.missed: list[str] = []

    def table(self, title: str, rows: list[tuple], columns: tuple[str, ...]) -> None:
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column, justify="right" if column != columns[0] else "left")
        for row in rows:
            table.add_row(*[str(c) for c in row])
        console.print(table)

    def check(self, name: str, ok: bool) -> str:
        if not ok:
            self.missed.append(name)
        return "[green]met[/]" if ok else "[red]missed[/]"


def child_seconds(loop: str, batch_size: int) -> float:
    """One epoch of the plain or the bare Lightning loop in a fresh process, as each lenet-train
    run is, with the malloc settings lenet-train applies (lenet_cli/cli/process.py):
    the rows then differ by the framework alone."""
    result = subprocess.run(
        [sys.executable, __file__, "--child", loop, "--batch", str(batch_size)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.split()[-1])


def bench_overhead(report: Report, root: Path, work: Path, rounds: int, batch_size: int) -> None:
    """The loops take turns, `rounds` times each: a shared machine's slow spells then hit all of
    them, and the fastest run of each (noise only ever adds time) is compared. Batch 64: what
    lenet-cli adds to Lightning (vs the bare Lightning loop); batch 256: time per training sample
    vs the plain loop. Other batch sizes are reported."""
    plain, bare, ours, ours_rate = [], [], [], []
    for _ in range(rounds):
        plain.append(child_seconds("plain", batch_size))
        bare.append(child_seconds("bare", batch_size))
        metrics = lenet_train(
            *ONE_EPOCH,
            f"data.batch_size={batch_size}",
            "optimizer=adam",
            "optimizer.lr=0.001",
            cwd=work,
        )[0]
        ours.append(metrics["fit_seconds"])
        ours_rate.append(metrics["train_samples_per_second"])
    plain_rate = TRAIN_IMAGES / min(plain)  # the loops train on lenet-train's 55,000 images
    if batch_size == 64:
        ratio = min(ours) / min(bare)
        target = ("vs bare Lightning <= 1.05x", report.check("adds <= 1.05x", ratio <= 1.05))
    elif batch_size == 256:
        ratio = plain_rate / max(ours_rate)
        target = ("per sample vs plain <= 1.10x", report.check("b256 <= 1.10x", ratio <= 1.10))
    else:
        target = ("", "(reported)")

    def row(name: str, values: list[float], reference: list[float], verdict: str = "") -> tuple:
        return (
            name,
            f"{min(values):.2f}",
            f"{median(values):.2f}",
            f"{min(values) / min(reference):.2f}x",
            f"{median(values) / median(reference):.2f}x",
            " ".join(f"{v:.2f}" for v in values),
            verdict,
        )

    rows = [
        row("plain PyTorch loop (in-memory tensors)", plain, plain),
        row("bare Lightning loop (same batches, no logger/callbacks)", bare, plain),
        row("lenet-train (progress bar, TensorBoard, pictures)", ours, plain),
        row("lenet-train vs the bare Lightning loop", ours, bare),
    ]
    if batch_size == 64:
        rows[-1] = (*rows[-1][:-1], target[1])
    rows.append(
        (
            "samples/s: plain loop, lenet-train (best)",
            f"{plain_rate:,.0f}",
            f"{max(ours_rate):,.0f}",
            f"{plain_rate / max(ours_rate):.2f}x",
            "",
            "",
            target[1] if batch_size == 256 else "",
        )
    )
    report.table(
        f"Overhead: one epoch, model=modern, batch {batch_size}, Adam 1e-3, label smoothing "
        f"{LABEL_SMOOTHING} (fit seconds, {rounds} runs each, taking turns)",
        rows,
        ("", "best", "median", "ratio (best)", "ratio (median)", "all runs", target[0]),
    )


def ablation(
    report: Report, name: str, rounds: int, on: Callable[[], float], off: Callable[[], float]
) -> tuple:
    """Run a measure off and on, taking turns; keep it when the median saves >= 2%."""
    with_it, without = [], []
    for _ in range(rounds):
        without.append(off())
        with_it.append(on())
    gain = 1 - median(with_it) / median(without)
    return (
        name,
        f"{median(without):.2f}",
        f"{median(with_it):.2f}",
        f"{100 * gain:+.1f}%",
        " / ".join(f"{a:.2f}-{b:.2f}" for a, b in zip(without, with_it, strict=True)),
        report.check(f"{name} gains >= 2%", gain >= 0.02),
    )


def teardown_child(images: torch.Tensor, labels: torch.Tensor, quick: bool) -> None:
    """A short Lightning fit, then the process ends: normally, or as lenet-train does (every exit
    handler, then no interpreter teardown). The parent times the whole process."""
    from lenet_cli.cli.process import exit_quickly, skip_teardown_at_exit

    if quick:
        skip_teardown_at_exit()
    bare_lightning_loop(images[:640], labels[:640], 64)
    if quick:
        exit_quickly()


def teardown_seconds(quick: bool) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--child", "teardown", "--batch", str(int(quick))],
        capture_output=True,
        check=True,
    )
    return time.perf_counter() - start


def page_faults(tuned: bool) -> int:
    """Minor page faults of growing tensor allocations (1 MB to 20 MB, each written and freed),
    with or without lenet-train's malloc settings: glibc's default maps each afresh and faults
    all 210 MB in page by page; with the settings the heap grows once to 20 MB."""
    code = (
        "import resource, torch\n"
        "from lenet_cli.cli.process import keep_freed_memory\n"
        f"keep_freed_memory() if {tuned} else None\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for i in range(1, 21):\n"
        "    t = torch.empty(i * 262_144).fill_(1.0)\n"
        "    del t\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return int(out.stdout.split()[-1])


def bench_measures(report: Report, work: Path, rounds: int) -> None:
    """Each speed measure lenet-cli keeps, off and on. One epoch at batch 64 (fit seconds) for
    the ones inside the training loop; whole-process seconds for the exit."""

    def epoch(*extra: str, env: dict[str, str] | None = None) -> Callable[[], float]:
        def run() -> float:
            return lenet_train(*ONE_EPOCH, "data.batch_size=64", *extra, cwd=work, env=env)[0][
                "fit_seconds"
            ]

        return run

    no_malloc = {**os.environ, "MALLOC_PERTURB_": "0"}  # any MALLOC_* variable switches it off
    rows = [
        ablation(
            report,
            "progress bar redrawn 10x a second",
            rounds,
            epoch(),
            epoch(  # Lightning's own rich bar, with its default refresh (every batch)
                "callbacks.progress_bar._target_=pytorch_lightning.callbacks.RichProgressBar",
                "callbacks.progress_bar.refresh_rate=1",
            ),
        ),
        ablation(report, "glibc malloc settings", rounds, epoch(), epoch(env=no_malloc)),
        ablation(
            report,
            "plain CUDA check (no NVML)",
            rounds,
            lambda: child_seconds("bare", 64),
            lambda: child_seconds("bare-nvml", 64),
        ),
        ablation(
            report,
            "exit without teardown",
            rounds,
            lambda: teardown_seconds(True),
            lambda: teardown_seconds(False),
        ),
    ]
    report.table(
        f"Speed measures: median seconds without and with each ({rounds} runs each, taking turns;"
        " one epoch at batch 64, fit seconds; the exit: whole process, a 10-step fit)",
        rows,
        ("measure", "without", "with", "saves", "runs (without-with)", "keep (>= 2%)"),
    )
    tuned, default = page_faults(True), page_faults(False)
    report.table(
        "glibc malloc settings: minor page faults of 1-20 MB tensors written and freed",
        [("glibc defaults", f"{default:,}"), ("lenet-train's settings", f"{tuned:,}")],
        ("", "page faults"),
    )


def bench_fast(report: Report, root: Path, work: Path) -> None:
    notebook_seconds, notebook_acc = notebook_loop(root)
    rows, accs, walls = [], [], []
    for seed in (0, 1, 2):
        metrics, wall, _ = lenet_train("experiment=fast", f"seed={seed}", cwd=work)
        accs.append(metrics["test/acc"])
        walls.append(wall)
        rows.append(
            (
                f"lenet-train experiment=fast seed={seed}",
                f"{wall:.1f}",
                f"{wall / notebook_seconds:.2f}x",
                f"{100 * metrics['test/acc']:.2f}%",
            )
        )
    mean_acc, mean_wall = sum(accs) / 3, sum(walls) / 3
    ok = mean_acc >= 0.99 and mean_wall / notebook_seconds <= 0.25
    rows.insert(
        0,
        (
            "notebook loop (ToTensor + DataLoader), 5 epochs",
            f"{notebook_seconds:.1f}",
            "1.00x",
            f"{100 * notebook_acc:.2f}%",
        ),
    )
    rows.append(
        (
            "mean of 3 seeds",
            f"{mean_wall:.1f}",
            f"{mean_wall / notebook_seconds:.2f}x",
            f"{100 * mean_acc:.2f}% {report.check('time to 99%', ok)}",
        )
    )
    report.table(
        "Time to 99%: whole command wall time", rows, ("", "seconds", "ratio", "test accuracy")
    )


def bench_startup(report: Report, work: Path) -> None:
    def best(*args: str) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run(
                [str(BIN / "lenet-train"), *args], cwd=work, capture_output=True, check=True
            )
            times.append(time.perf_counter() - start)
        return min(times)

    helps, cfg = best("--help"), best("--cfg", "job")
    report.table(
        "Start-up (best of 3)",
        [
            (
                "lenet-train --help",
                f"{helps:.2f}",
                "1.0",
                report.check("--help <= 1.0 s", helps <= 1.0),
            ),
            (
                "lenet-train --cfg job",
                f"{cfg:.2f}",
                "1.5",
                report.check("--cfg job <= 1.5 s", cfg <= 1.5),
            ),
        ],
        ("", "seconds", "target", ""),
    )


def wall_and_peak(*args: str, cwd: Path) -> tuple[float, float]:
    """lenet-train under a parent process of its own: (wall s, peak RSS in GB). ru_maxrss of
    RUSAGE_CHILDREN is the largest of the parent's children ever, hence a fresh parent each time;
    it is one process's peak (a sweep's under the default launcher, whose jobs run inside it)."""
    code = (
        "import json, resource, subprocess, sys, time; start = time.perf_counter(); "
        f"subprocess.run([{str(BIN / 'lenet-train')!r}, *sys.argv[1:]], check=True, "
        "capture_output=True); "
        "print(json.dumps([time.perf_counter() - start, "
        "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"lenet-train {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    wall, rss_kb = json.loads(out.stdout.strip().splitlines()[-1])
    return wall, rss_kb * 1024 / 1e9


def measured_run(*overrides: str, cwd: Path) -> tuple[dict, float, float]:
    """A lenet-train run under its own parent process: (metrics.json, wall s, peak RSS in GB)."""
    wall, peak_gb = wall_and_peak(*overrides, cwd=cwd)
    run = sorted(cwd.glob("outputs/*/*"))[-1]
    return json.loads((run / "metrics.json").read_text()), wall, peak_gb


def bench_default_run(report: Report, work: Path) -> None:
    """The default run (model=classic, 20 epochs): its memory, and what the pictures cost."""
    metrics, with_pictures, peak_gb = measured_run(cwd=work)
    _, without, _ = measured_run("logger.images=false", cwd=work)
    ratio = with_pictures / without
    report.table("Default run `lenet-train` (model=classic, 20 epochs): wall seconds, memory", [
        ("logger.images=false", f"{without:.1f}", "1.00x", "", ""),
        ("default (TensorBoard pictures on)", f"{with_pictures:.1f}", f"{ratio:.2f}x",
         "(reported)", ""),
        ("peak RSS of the default run", "", "", f"{peak_gb:.2f} GB",
         report.check("RSS <= 1.5 GB", peak_gb <= 1.5)),
        ("test accuracy of the default run", "", "", f"{100 * metrics['test/acc']:.2f}%", ""),
    ], ("", "seconds", "ratio", "value", "target"))  # fmt: skip


def bench_scaling(report: Report, root: Path, work: Path) -> None:
    rows = []
    for batch in (64, 256, 1024):
        metrics = lenet_train(*ONE_EPOCH, f"data.batch_size={batch}", cwd=work)[0]
        rows.append((f"batch {batch}, 2 threads", f"{metrics['train_samples_per_second']:,.0f}"))
    env_1 = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    out = subprocess.run(
        [str(BIN / "lenet-train"), *ONE_EPOCH, "data.batch_size=256"],
        cwd=work,
        env=env_1,
        capture_output=True,
        text=True,
    )
    if out.returncode == 0:
        newest = sorted(work.glob("outputs/*/*"))[-1]
        one = json.loads((newest / "metrics.json").read_text())["train_samples_per_second"]
        rows.append(("batch 256, 1 thread (OMP_NUM_THREADS=1)", f"{one:,.0f}"))
    report.table("Scaling: training throughput (samples/s)", rows, ("", "samples/s"))

    sweep = (
        "model=modern",
        "scheduler=none",
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=100",
        "optimizer.lr=0.1,0.03,0.01,0.003",
        "callbacks.progress_bar=null",
    )
    timings = []
    for extra in ((), ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")):
        start = time.perf_counter()
        subprocess.run(
            [str(BIN / "lenet-train"), "-m", *sweep, *extra], cwd=work, capture_output=True
        )
        timings.append(time.perf_counter() - start)
    report.table(
        "Scaling: a 4-job sweep (wall seconds)",
        [
            ("basic launcher (serial)", f"{timings[0]:.1f}", "1.00x"),
            (
                "hydra/launcher=joblib, 2 jobs",
                f"{timings[1]:.1f}",
                f"{timings[1] / timings[0]:.2f}x",
            ),
        ],
        ("", "seconds", "ratio"),
    )


# Tiny jobs: what a sweep costs beyond its jobs' training shows (issue 26, item 5).
TINY = (
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=3",
    "++trainer.limit_val_batches=1",
    "++trainer.limit_test_batches=1",
    "logger.images=false",
)


def tiny_sweep(n: int, work: Path) -> dict[str, float]:
    """`lenet-train -m seed=range(n)` of tiny jobs under the default launcher (every job in the
    sweep's own process): its wall time and peak RSS, and the jobs' own seconds from their
    records (fit_seconds: the training loop; job_status.json's seconds: the whole job)."""
    before = set(work.glob("outputs/multirun/*/*"))
    wall, peak_gb = wall_and_peak("-m", f"seed=range({n})", *TINY, cwd=work)
    (folder,) = set(work.glob("outputs/multirun/*/*")) - before
    fits = [json.loads(p.read_text())["fit_seconds"] for p in folder.glob("*/metrics.json")]
    jobs = [json.loads(p.read_text())["seconds"] for p in folder.glob("*/job_status.json")]
    shutil.rmtree(folder)  # 200 tiny jobs keep ~300 MB of checkpoints
    if len(fits) != n or len(jobs) != n:
        raise SystemExit(f"sweep of {n}: {len(fits)} metrics.json, {len(jobs)} job_status.json")
    return {"n": n, "wall": wall, "peak": peak_gb, "fit": sum(fits), "job": sum(jobs)}


def bench_sweep(report: Report, work: Path, sizes: list[int]) -> None:
    """Peak memory and the cost of each job beyond its training, for sweeps of several sizes.
    Per job beyond fit: wall / N - mean fit_seconds (start-up included); in the job: its
    job_status seconds - fit_seconds (building, the test, records); between jobs: the rest
    (Hydra's composition, the sweeper, callbacks, start-up); each added job: the marginal cost
    against the first sweep, ((wall - fit) - (wall_1 - fit_1)) / (N - N_1), start-up excluded."""
    sweeps = [tiny_sweep(n, work) for n in sizes]
    first, rows = sweeps[0], []
    for s in sweeps:
        n, beyond = s["n"], s["wall"] - s["fit"]
        row = (f"{n} jobs", f"{s['wall']:.1f}", f"{s['peak']:.2f}", f"{s['fit'] / n:.2f}",
               f"{(s['job'] - s['fit']) / n:.2f}", f"{(s['wall'] - s['job']) / n:.2f}",
               f"{beyond / n:.2f}")  # fmt: skip
        if s is first:
            rows.append((*row, "", "", ""))
            continue
        grown = 1000 * (s["peak"] - first["peak"])
        added = (beyond - (first["wall"] - first["fit"])) / (n - first["n"])
        flat = report.check(f"sweep of {n}: peak <= +50 MB", grown <= 50)
        cheap = report.check(f"sweep of {n}: <= 0.5 s a job", added <= 0.5)
        rows.append((*row, f"{grown:+.0f}", f"{added:.2f}", f"{flat} {cheap}"))
    report.table(
        f"Sweep of tiny jobs (`lenet-train -m seed=range(N)`, {' '.join(TINY)}), default "
        "launcher: the sweep process's peak RSS; seconds per job beyond its fit_seconds",
        rows,
        ("", "wall s", "peak GB", "fit s/job", "in job", "between jobs", "beyond fit",
         f"peak vs {first['n']} MB", "each added job", "+50 MB, 0.5 s"),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument(
        "--rounds", type=int, default=5, help="overhead: runs of each loop, taking turns"
    )
    parser.add_argument(
        "--overhead-batches",
        type=int,
        nargs="+",
        default=[64, 256],
        help="overhead: batch sizes to compare at (targets at 64 and 256)",
    )
    parser.add_argument(
        "--sweep-jobs",
        type=int,
        nargs="+",
        default=[8, 64, 200],
        help="sweep: jobs in each sweep (the first is the reference of the others)",
    )
    parser.add_argument(
        "--child", choices=("plain", "bare", "bare-nvml", "teardown"), help=argparse.SUPPRESS
    )
    parser.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = data_root()
    if args.child:
        from lenet_cli.cli.process import keep_freed_memory

        keep_freed_memory()
        (train_x, train_y), _ = load_mnist(root)
        if args.child == "teardown":  # see teardown_seconds
            teardown_child(train_x, train_y, quick=bool(args.batch))
            return
        # lenet-train trains on 55,000 images (5,000 are kept for validation)
        x, y = train_x[:55000], train_y[:55000]
        if args.child == "plain":
            print(plain_loop(x, y, batch_size=args.batch))
        else:
            print(bare_lightning_loop(x, y, args.batch, nvml_check=args.child == "bare-nvml"))
        return
    report = Report()
    console.print(
        f"[bold]lenet-cli benchmark[/] {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["LENET_DATA_DIR"] = str(root)
        for part in args.only:
            if part == "overhead":
                for batch_size in args.overhead_batches:
                    bench_overhead(report, root, work, args.rounds, batch_size)
            elif part == "measures":
                bench_measures(report, work, args.rounds)
            elif part == "fast":
                bench_fast(report, root, work)
            elif part == "startup":
                bench_startup(report, work)
            elif part == "default":
                bench_default_run(report, work)
            elif part == "scaling":
                bench_scaling(report, root, work)
            elif part == "sweep":
                bench_sweep(report, work, args.sweep_jobs)
    if report.missed:
        console.print(f"[red]Targets missed:[/] {', '.join(report.missed)}")
        sys.exit(1)
    console.print("[green]All targets met.[/]")


if __name__ == "__main__":
    main()
