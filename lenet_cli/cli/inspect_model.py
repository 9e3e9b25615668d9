"""`lenet-inspect`: what a network is made of, layer by layer, without training it. It composes
lenet-train's config (same overrides, same errors) and builds the network on the CPU without
importing Lightning, so an answer takes about as long as importing torch."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from omegaconf import OmegaConf

from lenet_cli.config import compose_checked, validate
from lenet_cli.errors import ConfigError
from lenet_cli.overrides import given_value, grid, key_value, override_key


def inspect_overrides(overrides: list[str]) -> dict[str, Any]:
    """Compose `train` with these overrides (exactly as lenet-train does) and describe its model."""
    cfg = compose_checked("train", overrides)
    validate(cfg)
    from lenet_cli.models.describe import describe

    return describe(OmegaConf.to_container(cfg.model, resolve=True))


def compare(sweep: str, overrides: list[str]) -> list[dict[str, Any]]:
    """One description per value of a sweep override such as model=classic,modern,mlp."""
    from hydra.errors import OverrideParseException

    try:
        jobs = grid([sweep])
    except OverrideParseException:
        raise ConfigError(
            f"--compare {sweep!r} is not one override.",
            fix="Give one key with comma-separated values: --compare model=classic,modern,mlp.",
        ) from None
    described = []
    for (job,) in jobs:  # a variant of model= is named by its value, any other by its override
        name = key_value(job)[1] if override_key(job) == "model" else job
        described.append({**inspect_overrides([*overrides, job]), "variant": name})
    return described


def legend(compare: bool = False):
    """What the columns mean, under a table: one line each (in 80 columns) a student can read."""
    from rich.table import Table

    terms = Table.grid(padding=(0, 2))
    terms.add_column(style="bold", no_wrap=True)
    terms.add_column(style="dim")
    terms.add_row("RF", "receptive field: a unit sees RF x RF input pixels (all: every pixel)")
    terms.add_row("jump", "neighbouring units look this many input pixels apart")
    params = "params: trainable weights and biases"
    if compare:
        terms.add_row("last conv", "the last convolution: its RF and jump are those of its units")
        terms.add_row("MACs", f"multiply-accumulates per image; {params}")
    else:
        terms.add_row("shape", f"feature maps x height x width; {params}")
        terms.add_row("MACs", "multiply-accumulates (one multiply and one add) per image")
    return terms


def compare_table(variants: list[dict[str, Any]]):
    from rich.table import Table

    from lenet_cli.models.describe import count

    table = Table(title="side by side", title_justify="left")
    for name in ("variant", "params", "MACs / image", "last conv", "its RF", "its jump"):
        table.add_column(name, justify="left" if name in ("variant", "last conv") else "right")
    none = {"name": "none", "receptive_field": None, "jump": None}  # count(None) shows "-"
    for v in variants:
        last = next((r for r in v["layers"] if r["name"] == v["last_conv"]), none)
        totals = count(v["total"]["params"]), count(v["total"]["macs"])
        rf = count(last["receptive_field"]), count(last["jump"])
        table.add_row(v["variant"], *totals, last["name"], *rf)
    return table


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="lenet-inspect",
        description="Layer-by-layer shapes, trainable parameters, multiply-accumulates per image "
        "and receptive fields of a network, composed from the same config and overrides as "
        "lenet-train.",
        epilog="examples:\n  lenet-inspect model=classic\n  lenet-inspect model=modern "
        "model.kernel_size=3 --json\n  lenet-inspect --compare model=classic,modern,mlp",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--compare", metavar="KEY=A,B,...", help="side by side, one per value")
    parser.add_argument("overrides", nargs="*", help="lenet-train overrides, e.g. model=modern")
    args = parser.parse_args(argv)
    fmt = given_value(args.overrides, "inspect.format")  # the config-style spelling of --json
    fmt = ("json" if args.json else "table") if fmt is None else fmt
    if fmt not in ("table", "json"):
        raise ConfigError(
            f"inspect.format={fmt!r} is unknown.", fix="Use inspect.format=table or json."
        )
    overrides = [o for o in args.overrides if override_key(o) != "inspect.format"]
    result = compare(args.compare, overrides) if args.compare else inspect_overrides(overrides)
    if fmt == "json":
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    from lenet_cli.console import console
    from lenet_cli.models.describe import layer_table

    console.print(compare_table(result) if args.compare else layer_table(result))
    console.print(legend(compare=bool(args.compare)))


def main() -> None:
    from lenet_cli.console import run_command

    run_command(run, sys.argv[1:])
