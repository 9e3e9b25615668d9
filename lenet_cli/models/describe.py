"""A network described layer by layer: output shapes, trainable parameters, multiply-accumulates
and receptive fields (lenet-inspect, the training summary and scripts/model_table.py show it)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from rich.table import Table


def describe(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """Per-layer rows (shape, trainable parameters, MACs, receptive field) and totals."""
    from lenet_cli.models import build_network  # torch, but not Lightning

    described = describe_network(build_network(model_cfg))
    return {"model": model_cfg.get("name"), "target": model_cfg.get("_target_"), **described}


def _trainable(module: Any) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def describe_network(net: Any) -> dict[str, Any]:
    """The rows of `describe` for a network already built (one with a shape `trace`)."""
    layers = net.named_layers()  # the trace is built in the same walk: every row names a layer
    rows = [
        {**asdict(r), "shape": list(r.shape), "params": _trainable(layers[r.name])}
        for r in net.trace
    ]
    convs = [r for r in rows if r["kind"].startswith("conv")]
    return {
        "layers": rows,
        "total": {"params": _trainable(net), "macs": sum(r["macs"] for r in rows)},
        "last_conv": convs[-1]["name"] if convs else None,
    }


def count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def layer_table(described: dict[str, Any], title: str = "", receptive_fields: bool = True) -> Table:
    """The rows of `describe` as a table with the totals underneath (without the receptive
    field columns, as the training summary shows it, it fits 80 columns)."""
    title = title or f"{described['model']} ({described['target']})"
    table = Table(title=title, title_justify="left", show_footer=True)
    table.add_column("layer", "total")
    table.add_column("kind")
    table.add_column("output shape")
    table.add_column("params", count(described["total"]["params"]), justify="right")
    table.add_column("MACs / image", count(described["total"]["macs"]), justify="right")
    if receptive_fields:
        table.add_column("RF", justify="right")
        table.add_column("jump", justify="right")
    for row in described["layers"]:
        # Fully connected layers have no receptive field of their own: every unit sees the image.
        rf = "all" if row["receptive_field"] is None else str(row["receptive_field"])
        shape = "x".join(map(str, row["shape"]))
        cells = [row["name"], row["kind"], shape, count(row["params"]), count(row["macs"])]
        cells += [rf, count(row["jump"])] if receptive_fields else []
        table.add_row(*cells)
    return table
