"""The pruning table of docs/sweeps.md: the default `hparams_search=optuna` space on real MNIST,
with and without a pruner, side by side in one run of this script.

    LENET_DATA_DIR=../shared/data python scripts/pruning_table.py               # ~40 min on 2 cores
    LENET_DATA_DIR=../shared/data python scripts/pruning_table.py --pruners none median --joblib
    python scripts/pruning_table.py --read /tmp/pruning                          # table only

Each search: `lenet-train -m hparams_search=optuna hydra.sweeper.n_trials=20 trainer.max_epochs=5
hydra/sweeper/pruner=<p> logger.images=false`, one trial at a time (the default launcher). For each:
the epochs trained (metrics.json `epochs` of every trial), wall time, trials pruned, the best
val/acc_best and the test accuracy of that best trial. `--joblib` adds the median search under
hydra/launcher=joblib with n_jobs=2 and the share of its wall time both slots were busy: each
trial's time RUNNING in the study (from its start to its completion, which includes Hydra's
composing of the job in the worker), summed, over 2 x the command's wall time (start-up included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

BIN = Path(sys.executable).parent


def run_search(folder: Path, pruner: str, trials: int, epochs: int, extra: list[str]) -> float:
    command = [str(BIN / "lenet-train"), "-m", "hparams_search=optuna",
               f"hydra.sweeper.n_trials={trials}", f"trainer.max_epochs={epochs}",
               f"hydra/sweeper/pruner={pruner}", "logger.images=false",
               f"hydra.sweep.dir={folder}", *extra]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    (folder / "wall_seconds.txt").write_text(f"{wall:.1f}\n")
    return wall


def row(name: str, folder: Path, slots: int = 1) -> list[str]:
    jobs = [p for p in folder.iterdir() if (p / "job_status.json").is_file()]
    status = [json.loads((p / "job_status.json").read_text()) for p in jobs]
    metrics = [json.loads((p / "metrics.json").read_text()) for p in jobs]
    done = [m for s, m in zip(status, metrics, strict=True) if s["status"] == "ok"]
    best = max(done, key=lambda m: m["val/acc_best"])
    wall = float((folder / "wall_seconds.txt").read_text())
    journal = JournalStorage(JournalFileBackend(str(folder / "optuna.journal")))
    trials = optuna.load_study(study_name="lenet", storage=journal).trials
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials) / (
        slots * wall
    )
    return [
        name,
        str(len(jobs)),
        str(sum(s["status"] == "pruned" for s in status)),
        str(sum(int(m["epochs"]) for m in metrics)),
        f"{wall:.0f}",
        f"{100 * best['val/acc_best']:.2f}",
        f"{100 * best['test/acc']:.2f}",
        f"{100 * busy:.0f}%" if slots > 1 else "-",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/pruning"))
    parser.add_argument("--read", type=Path, help="only print the table of an earlier --out")
    parser.add_argument("--pruners", nargs="+", default=["none", "median", "hyperband"])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        help="share of each epoch's training batches (trainer.limit_train_batches)",
    )
    parser.add_argument("--joblib", action="store_true", help="add median under joblib, n_jobs=2")
    args = parser.parse_args()
    out = args.read or args.out
    if args.read is None:
        if not os.environ.get("LENET_DATA_DIR"):
            sys.exit("Set LENET_DATA_DIR to the folder holding MNIST/raw (e.g. ../shared/data).")
        fraction = [f"++trainer.limit_train_batches={args.fraction}"] if args.fraction < 1 else []
        for pruner in args.pruners:
            run_search(out / pruner, pruner, args.trials, args.epochs, fraction)
        if args.joblib:
            slots = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"]
            run_search(out / "median-joblib2", "median", args.trials, args.epochs, fraction + slots)
    header = ["search", "trials", "pruned", "epochs", "wall s", "best val/acc %",
              "its test/acc %", "both slots busy"]  # fmt: skip
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for folder in sorted(p for p in out.iterdir() if (p / "wall_seconds.txt").is_file()):
        name = (
            f"pruner={folder.name}"
            if "joblib" not in folder.name
            else "pruner=median, joblib n_jobs=2"
        )
        print("| " + " | ".join(row(name, folder, 2 if "joblib" in folder.name else 1)) + " |")


if __name__ == "__main__":
    main()
