"""A network described layer by layer: output shapes, trainable parameters, multiply-accumulates
and receptive fields (what lenet-inspect prints, the training summary shows and
scripts/model_table.py tabulates)."""

from __future__ import annotations

from typing import Any


def describe(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """Per-layer rows (shape, trainable parameters, MACs, receptive field) and totals."""
    from lenet_cli.models.build import build_network  # torch, but not Lightning

    described = describe_network(build_network(model_cfg))
    return {"model": model_cfg.get("name"), "target": model_cfg.get("_target_"), **described}


def describe_network(net: Any) -> dict[str, Any]:
    """The rows of `describe` for a network already built (one with a shape `trace`)."""
    layers = net.named_layers()
    rows = []
    for info in net.trace:  # built in one walk, so every row names a layer
        params = sum(p.numel() for p in layers[info.name].parameters() if p.requires_grad)
        rows.append({
            "name": info.name,
            "kind": info.kind,
            "shape": list(info.shape),
            "params": params,
            "macs": int(info.macs),
            "receptive_field": info.receptive_field,
            "jump": info.jump,
        })  # fmt: skip
    convs = [r for r in rows if r["kind"].startswith("conv")]
    return {
        "layers": rows,
        "total": {
            "params": sum(p.numel() for p in net.parameters() if p.requires_grad),
            "macs": sum(r["macs"] for r in rows),
        },
        "last_conv": convs[-1]["name"] if convs else None,
    }
