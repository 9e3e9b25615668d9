"""`lenet-inspect`: what a network is made of, layer by layer, without training it.

    lenet-inspect model=classic model.kernel_size=3      # one table: shapes, params, MACs, RF
    lenet-inspect --json model=modern                    # the same as JSON
    lenet-inspect --compare model=classic,modern,mlp     # variants side by side

It composes the same config as `lenet-train` (same overrides, same errors) and builds the network
on the CPU. Lightning is never imported, so an answer takes about as long as importing torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from omegaconf import OmegaConf

from lenet_cli.config import compose_checked, validate
from lenet_cli.errors import ConfigError, LenetError


def inspect_overrides(overrides: list[str]) -> dict[str, Any]:
    """Compose `train` with these overrides (exactly as lenet-train does) and describe its model."""
    cfg = compose_checked("train", overrides)
    validate(cfg)
    from lenet_cli.models.describe import describe

    return describe(OmegaConf.to_container(cfg.model, resolve=True))


def compare(sweep: str, overrides: list[str]) -> list[dict[str, Any]]:
    """One description per value of a sweep override such as model=classic,modern,mlp."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        (parsed,) = OverridesParser.create().parse_overrides([sweep])
    except (OverrideParseException, ValueError):
        raise ConfigError(
            f"--compare {sweep!r} is not one override.",
            fix="Give one key with comma-separated values: --compare model=classic,modern,mlp.",
        ) from None
    key = parsed.get_key_element()
    if parsed.is_sweep_override():
        values = list(parsed.sweep_string_iterator())
    else:
        values = [parsed.get_value_element_as_str()]
    prefix = "" if key == "model" else f"{key}="  # a variant of model= is named by its value
    return [
        {**inspect_overrides([*overrides, f"{key}={v}"]), "variant": prefix + v} for v in values
    ]


def legend(compare: bool = False):
    """What the columns mean, under a table, in words a student knows (one line each in 80
    columns): the term, then its meaning."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(style="dim")
    grid.add_row("RF", "receptive field: a unit sees RF x RF input pixels (all: every pixel)")
    grid.add_row("jump", "neighbouring units look this many input pixels apart")
    params = "params: trainable weights and biases"
    if compare:
        grid.add_row(
            "last conv", "the last convolution: its RF and its jump are those of its units"
        )
        grid.add_row("MACs", f"multiply-accumulates per image; {params}")
    else:
        grid.add_row("shape", f"feature maps x height x width; {params}")
        grid.add_row("MACs", "multiply-accumulates (one multiply and one add) per image")
    return grid


def compare_table(variants: list[dict[str, Any]]):
    from rich.table import Table

    from lenet_cli.models.describe import count

    table = Table(title="side by side", title_justify="left")
    for name in ("variant", "params", "MACs / image", "last conv", "its RF", "its jump"):
        table.add_column(name, justify="left" if name in ("variant", "last conv") else "right")
    for v in variants:
        last = next((r for r in v["layers"] if r["name"] == v["last_conv"]), None)
        table.add_row(
            v["variant"],
            count(v["total"]["params"]),
            count(v["total"]["macs"]),
            last["name"] if last else "none",
            count(last["receptive_field"]) if last else "-",
            count(last["jump"]) if last else "-",
        )
    return table


def _parse(argv: list[str]) -> tuple[argparse.Namespace, str]:
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
    fmt = "json" if args.json else "table"
    rest = []
    for override in args.overrides:
        key, _, value = override.partition("=")
        if key != "inspect.format":  # the config-style spelling of --json
            rest.append(override)
        elif value in ("table", "json"):
            fmt = value
        else:
            raise ConfigError(
                f"inspect.format={value!r} is unknown.", fix="Use inspect.format=table or json."
            )
    args.overrides = rest
    return args, fmt


def run(argv: list[str]) -> None:
    args, fmt = _parse(argv)
    if args.compare:
        result: Any = compare(args.compare, args.overrides)
    else:
        result = inspect_overrides(args.overrides)
    if fmt == "json":
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    from lenet_cli.console import console
    from lenet_cli.models.describe import layer_table

    compared = isinstance(result, list)
    console.print(compare_table(result) if compared else layer_table(result))
    console.print(legend(compare=compared))


def main() -> None:
    from lenet_cli.console import print_error

    try:
        run(sys.argv[1:])
    except LenetError as error:
        print_error(error)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
