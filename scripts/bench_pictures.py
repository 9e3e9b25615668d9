"""What the TensorBoard pictures cost: time spent inside the pictures callback during a real run.

    export LENET_DATA_DIR=../shared/data
    .venv/bin/python scripts/bench_pictures.py               # one epoch of the default run
    .venv/bin/python scripts/bench_pictures.py --epochs 12   # the whole default run
    .venv/bin/python scripts/bench_pictures.py --pairs 3     # and wall times with / without

The first measurement runs lenet-train's `train()` in this process with every hook of the
pictures callback timed, so it holds even on a busy machine (both the hooks and the run slow down
together). `--pairs N` also runs the command N times with and N times without pictures,
alternating, and compares the median wall times: the direct measure, but only meaningful on a
quiet machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent
HOOKS = ("setup", "on_train_start", "on_before_optimizer_step", "on_train_epoch_end",
         "on_test_epoch_start", "on_test_batch_end", "on_test_epoch_end")  # fmt: skip


def timed_run(overrides: list[str], output_dir: Path) -> dict[str, float]:
    """train() in this process with the pictures callback's hooks timed."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig

    from lenet_cli.cli.train import train
    from lenet_cli.training.callbacks.pictures import PicturesCallback

    spent = dict.fromkeys(HOOKS, 0.0)
    for name in HOOKS:
        original = getattr(PicturesCallback, name)

        @functools.wraps(original)
        def wrapped(*args, _original=original, _name=name, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_name] += time.perf_counter() - start

        setattr(PicturesCallback, name, wrapped)
    with initialize_config_module(config_module="lenet_cli.conf", version_base="1.3"):
        extra = [f"paths.output_dir={output_dir}", "hydra.mode=RUN"]
        cfg = compose("train", overrides=[*overrides, *extra], return_hydra_config=True)
    HydraConfig().set_config(cfg)
    start = time.perf_counter()
    train(cfg)
    total = time.perf_counter() - start
    fit = json.loads((output_dir / "metrics.json").read_text())["fit_seconds"]
    return {"run": total, "fit": fit, "pictures": sum(spent.values()), **spent}


def wall(overrides: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        [str(BIN / "lenet-train"), *overrides], cwd=cwd, capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=0, help="also time N runs with and N without")
    args = parser.parse_args()
    if not os.environ.get("LENET_DATA_DIR"):
        sys.exit("Set LENET_DATA_DIR to the folder that holds MNIST/raw, e.g. ../shared/data.")
    overrides = [f"trainer.max_epochs={args.epochs}", "callbacks.progress_bar=null"]
    with tempfile.TemporaryDirectory() as work:
        t = timed_run(overrides, Path(work) / "timed")
        share = 100 * t["pictures"] / t["run"]
        print(f"default run, {args.epochs} epoch(s): {t['run']:.1f} s in train() "
              f"({t['fit']:.1f} s fit); pictures callback {t['pictures']:.2f} s "
              f"= {share:.1f}%")  # fmt: skip
        print(
            "  by hook: "
            + ", ".join(f"{name} {t[name]:.2f} s" for name in HOOKS if t[name] >= 0.005)
        )
        if args.pairs:
            times: dict[str, list[float]] = {"true": [], "false": []}
            for _ in range(args.pairs):
                for images in times:
                    times[images].append(wall([*overrides, f"logger.images={images}"], Path(work)))
            on, off = statistics.median(times["true"]), statistics.median(times["false"])
            print(f"lenet-train wall, median of {args.pairs}: pictures on {on:.1f} s, "
                  f"off {off:.1f} s, ratio {on / off:.3f}")  # fmt: skip
            print(f"  on: {times['true']}\n  off: {times['false']}")


if __name__ == "__main__":
    main()
