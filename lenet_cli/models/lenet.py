"""One LeNet builder for the whole family: every knob combines with every other. Each layer is
built in one walk that also writes its row of the shape trace, so the flatten size is derived,
never hand-edited, and an impossible geometry fails with the trace up to it."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial

from torch import Tensor, nn

from lenet_cli.errors import ConfigError, GeometryError
from lenet_cli.models.layers import (
    ACTIVATION,
    C3_TABLE_OF,
    EuclideanRBF,
    InputStage,
    PartialConv2d,
    Subsampling,
)


@dataclass
class LayerInfo:
    """One row of the shape trace: what a layer outputs and what it costs."""

    name: str
    kind: str
    shape: tuple[int, ...]
    macs: int = 0
    receptive_field: int | None = None
    jump: int | None = None


def _per_layer(value: int | str | Sequence, n: int, key: str) -> list:
    if isinstance(value, str) or not hasattr(value, "__len__"):
        return [value] * n
    if len(value) != n:
        raise ConfigError(
            f"model.{key} lists {len(value)} values but the network has {n} conv layers.",
            fix=f"Give one value (for every layer) or exactly {n}, e.g. model.{key}=[...].",
        )
    return list(value)


def conv_stages(
    channels: list[int],
    kernel_size: int | Sequence[int],
    padding: int | str | Sequence,
    stride: int,
    pooling: str,
    pool_size: int,
    c3_table: str,
    pool_maps: int | Sequence[int],
) -> list[tuple]:
    """The checked (channels, kernel, padding, stride, copies, table) of each conv stage.
    pooling=stride folds the pooling into the convolution's stride; torch defines "same" padding
    at stride 1 only, so at a larger stride it becomes (k - 1) // 2."""
    n = len(channels)
    copies = _per_layer(pool_maps, n, "pool_maps")  # subsampling maps per feature map
    if any(c != 1 for c in copies) and pooling != "trainable":
        raise ConfigError(
            f"model.pool_maps={pool_maps} feeds each feature map to several subsampling maps, but "
            "only trainable subsampling gives each its own coefficient and bias (under "
            f"model.pooling={pooling} they would be identical copies, or there are none).",
            fix="Use model.pooling=trainable with model.pool_maps, or model.pool_maps=1.",
        )
    if c3_table in C3_TABLE_OF:  # a partial table fits one geometry: its S2 and its C3 maps
        table, label = C3_TABLE_OF[c3_table]
        maps_in, maps_out = 1 + max(max(row) for row in table), len(table)
        if len(channels) < 2 or (channels[0] * copies[0], channels[1]) != (maps_in, maps_out):
            given, fix = f"model.channels={channels}", f"model.channels=[{maps_in},{maps_out}]"
            if copies and copies[0] != 1:
                given += f" with model.pool_maps={copies}"
                fix += " and model.pool_maps=1"
            raise ConfigError(
                f"model.c3_table={c3_table} ({label}) connects {maps_in} S2 maps to {maps_out} "
                f"C3 maps, but {given}.",
                fix=f"Use {fix} with that table, or model.c3_table=full.",
            )
    kernels = _per_layer(kernel_size, n, "kernel_size")
    conv_stride = stride * (pool_size if pooling == "stride" else 1)
    paddings = [
        (k - 1) // 2 if p == "same" and conv_stride > 1 else p
        for k, p in zip(kernels, _per_layer(padding, n, "padding"), strict=True)
    ]
    tables = [C3_TABLE_OF.get(c3_table) if i == 1 else None for i in range(n)]  # (table, label)
    return list(zip(channels, kernels, paddings, [conv_stride] * n, copies, tables, strict=True))


# Torch's pooling layers by model.pooling (trainable subsampling is LeCun's, in layers.py).
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d, "lp": partial(nn.LPPool2d, 2)}


def add_row(
    trace: list[LayerInfo], letter: str, kind: str, shape: tuple, macs: int, k: int = 0, s: int = 1
) -> str:
    """Append the next layer's row and return its name (C1, S2, ..., F6). A full layer (k = 0)
    has no receptive field or jump: each of its units sees the whole input."""
    name, last = f"{letter}{len(trace)}", trace[-1]
    rf = jump = None
    if k:
        rf, jump = last.receptive_field + (k - 1) * last.jump, last.jump * s
    trace.append(LayerInfo(name, kind, shape, macs, rf, jump))
    if len(shape) == 3 and shape[-1] < 1:
        rows = (f"  {r.name:<8} {r.kind:<22} -> {'x'.join(map(str, r.shape))}" for r in trace)
        raise GeometryError(
            f"Layer {name} would produce a feature map smaller than 1x1.",
            fix="Use a smaller model.kernel_size or model.pool_size, more model.padding (or "
            "padding=same), fewer model.channels, or pooling=none.",
            details="Shape trace:\n" + "\n".join(rows),
        )
    return name


def feature_layers(
    trace: list[LayerInfo], stages: list[tuple], pooling: str, size: int, act: str, bn: bool
) -> Iterator[tuple[str, nn.Module]]:
    """C1, S2, C3, ...: each conv block and its size x size pooling, traced as it is built."""
    for out, k, p, s, copies, table in stages:
        c, width, _ = trace[-1].shape
        width = width if p == "same" else (width + 2 * p - k) // s + 1  # "same": stride 1 only
        kind = f"conv {k}x{k}" + (f" /{s}" if s > 1 else "")
        if table:
            conv: nn.Module = PartialConv2d(table[0], c, k, s, p)
            kind += f" ({table[1]})"
        else:
            conv = nn.Conv2d(c, out, k, s, p)
        block = [conv, nn.BatchNorm2d(out)] if bn else [conv]
        macs = width * width * conv.weight.numel()  # a k x k kernel per connected map pair
        name = add_row(trace, "C", kind, (out, width, width), macs, k, s)
        yield name, nn.Sequential(*block, ACTIVATION[act]())
        if pooling in ("stride", "none"):
            continue
        if pooling == "trainable":  # LeCun: sum, scale, bias, then squash
            pool = nn.Sequential(Subsampling(out, size, copies), ACTIVATION[act]())
        else:
            pool = POOLS[pooling](size)
        c, width = out * copies, width // size
        kind = f"{pooling} pool {size}x{size}" + (f", {copies} per map" if copies > 1 else "")
        macs = c * width * width if pooling == "trainable" else 0
        yield add_row(trace, "S", kind, (c, width, width), macs, size, size), pool


def full_layers(
    trace: list[LayerInfo],
    hidden: Sequence[int],
    num_classes: int,
    activation: str,
    dropout: float,
    batch_norm: bool = False,
    head: str = "linear",
) -> Iterator[tuple[str, nn.Module]]:
    """Flatten, the hidden full layers (C5 after convolutions, else F), the output layer."""
    yield "flatten", nn.Flatten()
    in_features = math.prod(trace[-1].shape)
    for j, width in enumerate(hidden):
        letter = "C" if j == 0 and trace[-1].name[0] in "CS" else "F"
        kind = f"full (from {in_features})" if letter == "C" else "full"
        block = [nn.Linear(in_features, width)] + ([nn.BatchNorm1d(width)] if batch_norm else [])
        block += [ACTIVATION[activation]()] + ([nn.Dropout(dropout)] if dropout else [])
        yield add_row(trace, letter, kind, (width,), in_features * width), nn.Sequential(*block)
        in_features = width
    trace.append(LayerInfo("output", "linear", (num_classes,), in_features * num_classes))
    yield "output", (EuclideanRBF if head == "rbf" else nn.Linear)(in_features, num_classes)


class TracedNetwork(nn.Module):
    """A network made of named stages (nn.Sequential) with a shape trace, one row per layer."""

    trace: list[LayerInfo]

    def named_layers(self) -> dict[str, nn.Module]:
        """Layers by their trace name (C1, S2, ..., output), for inspection and pictures."""
        stages = self.children()
        return {k: v for stage in stages for k, v in stage.named_children() if k != "flatten"}


class LeNet(TracedNetwork):
    """Conv / pool blocks (`features`), then full layers (`classifier`): pixels in [0, 1],
    (N, in_channels, input_size, input_size), to logits (the loss applies log-softmax)."""

    def __init__(
        self,
        channels: Sequence[int] = (6, 16),
        kernel_size: int | Sequence[int] = 5,
        padding: int | str | Sequence = 0,
        stride: int = 1,
        activation: str = "relu",
        pooling: str = "max",
        pool_size: int = 2,
        hidden: Sequence[int] = (120, 84),
        dropout: float = 0.0,
        batch_norm: bool = False,
        c3_table: str = "full",
        pool_maps: int | Sequence[int] = 1,
        head: str = "linear",
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 28,
        input_padding: int = 0,
        mean: float = 0.0,
        std: float = 1.0,
    ) -> None:
        super().__init__()
        stages = conv_stages(
            list(channels), kernel_size, padding, stride, pooling, pool_size, c3_table, pool_maps
        )
        if head == "rbf" and not hidden:
            raise ConfigError(
                "model.head=rbf needs at least one hidden layer (F6).",
                fix="Set model.hidden, e.g. [120,84], or use model.head=linear.",
            )
        size = input_size + 2 * input_padding
        # (N, in_channels, input_size, input_size) pixels -> a border of background, normalised
        shape = (in_channels, size, size)
        self.trace = [LayerInfo("input", f"pad {input_padding}, normalise", shape, 0, 1, 1)]
        features = OrderedDict(input=InputStage(mean, std, input_padding))
        # C1, S2, C3, S4 ...: (N, channels[i] * pool_maps[i], h, w) after each conv stage
        convs = feature_layers(self.trace, stages, pooling, pool_size, activation, batch_norm)
        self.features = nn.Sequential(features | dict(convs))
        # flatten (N, c * h * w) -> full layers (C5, F6 ...) -> (N, num_classes) logits
        classifier = full_layers(self.trace, hidden, num_classes, activation, dropout, head=head)
        self.classifier = nn.Sequential(OrderedDict(classifier))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
