"""Train every named variant with its default recipe and print the README's model table.

    LENET_DATA_DIR=../shared/data python scripts/model_table.py              # all seven (~14 min)
    LENET_DATA_DIR=../shared/data python scripts/model_table.py classic mlp  # some of them

Each row is one `lenet-train model=<variant>` run (printed above the table, so any row can be
reproduced on its own); parameters and MACs come from `lenet-inspect --json`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent
VARIANTS = {
    "classic": "LeNet-5 as published: scaled tanh, trainable subsampling, C3 table",
    "modern": "ReLU, max pooling, full C3",
    "d2l": "sigmoid, average pooling (d2l book)",
    "tutorial": "3x3 kernels, ReLU, max pooling (PyTorch tutorial)",
    "lenet1": "LeNet-1 (1998, III.C): 4 and 12 maps, partial C3 table, no hidden layer",
    "lenet4": "LeNet-4 (1998, III.C): 4 maps, 2 subsampling maps each, 16 maps, 120 units",
    "mlp": "784-512-512-10 fully connected baseline",
}


def inspect_totals(variant: str) -> dict:
    out = subprocess.run([str(BIN / "lenet-inspect"), "--json", f"model={variant}"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout)["total"]


def train(variant: str, work: Path) -> dict:
    command = [str(BIN / "lenet-train"), f"model={variant}", "callbacks.progress_bar=null"]
    print("$", "lenet-train", f"model={variant}", flush=True)
    subprocess.run(command, cwd=work, check=True, capture_output=True)
    run = sorted(work.glob("outputs/*/*"))[-1]
    return json.loads((run / "metrics.json").read_text())


def main() -> None:
    variants = sys.argv[1:] or list(VARIANTS)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            totals, metrics = inspect_totals(variant), train(variant, Path(tmp))
            rows.append(
                f"| `{variant}` | {VARIANTS[variant]} | {totals['params']:,} | {totals['macs']:,} "
                f"| {100 * metrics['test/acc']:.2f}% | {metrics['epochs']} "
                f"| {metrics['fit_seconds']:.0f} |"
            )
    print("\n| model | what | parameters | MACs / image | test accuracy | epochs | fit seconds |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
