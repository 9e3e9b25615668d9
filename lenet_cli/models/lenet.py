"""One LeNet builder for the whole family: every knob combines with every other.

The flatten size is derived from a shape trace computed before any module is built, so an
impossible geometry fails early with the trace, and changing the kernel, padding, stride or input
size never needs a hand-edited number.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from lenet_cli.errors import ConfigError, GeometryError
from lenet_cli.models.choices import ACTIVATIONS, C3_TABLES, HEADS, POOLINGS, check_choice
from lenet_cli.models.layers import (
    C3_TABLE_OF,
    EuclideanRBF,
    InputStage,
    PartialConv2d,
    Subsampling,
    make_activation,
    table_geometry,
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

    def shape_str(self) -> str:
        return "x".join(str(s) for s in self.shape)


def _per_layer(value: int | str | Sequence, n: int, key: str) -> list:
    if isinstance(value, (list, tuple)) or (
        hasattr(value, "__len__") and not isinstance(value, str)
    ):
        values = list(value)
        if len(values) != n:
            raise ConfigError(
                f"model.{key} lists {len(values)} values but the network has {n} conv layers.",
                fix=f"Give one value (for every layer) or exactly {n}, e.g. model.{key}=[...].",
            )
        return values
    return [value] * n


def conv_settings(
    kernel_size: int | Sequence[int],
    padding: int | str | Sequence,
    stride: int,
    pooling: str,
    pool_size: int,
    n_conv: int,
) -> list[tuple[int, int | str, int]]:
    """(kernel, padding, stride) of each conv layer, as the conv module takes them.

    pooling=stride folds the pooling into the convolution's stride; "same" padding is only
    defined at stride 1, so at a larger stride it becomes (k - 1) // 2.
    """
    kernels = _per_layer(kernel_size, n_conv, "kernel_size")
    paddings = _per_layer(padding, n_conv, "padding")
    conv_stride = stride * (pool_size if pooling == "stride" else 1)
    return [
        (k, (k - 1) // 2 if p == "same" and conv_stride > 1 else p, conv_stride)
        for k, p in zip(kernels, paddings, strict=True)
    ]


def format_trace(trace: list[LayerInfo]) -> str:
    return "\n".join(f"  {row.name:<8} {row.kind:<22} -> {row.shape_str()}" for row in trace)


def trace_geometry(
    *,
    channels: Sequence[int],
    kernel_size: int | Sequence[int],
    padding: int | str | Sequence,
    stride: int,
    pooling: str,
    pool_size: int,
    hidden: Sequence[int],
    num_classes: int,
    in_channels: int,
    input_size: int,
    input_padding: int,
    c3_table: str,
    pool_maps: int | Sequence[int] = 1,
) -> list[LayerInfo]:
    """Shapes, MACs and receptive fields layer by layer; raises GeometryError on a map below 1x1."""
    n_conv = len(channels)
    convs = conv_settings(kernel_size, padding, stride, pooling, pool_size, n_conv)
    copies = _per_layer(pool_maps, n_conv, "pool_maps")
    size = input_size + 2 * input_padding
    c = in_channels
    rf, jump = 1, 1
    trace = [LayerInfo("input", f"pad {input_padding}, normalise", (c, size, size), 0, rf, jump)]
    index = 1

    def fail(layer: str, knob: str) -> None:
        raise GeometryError(
            f"Layer {layer} would produce a feature map smaller than 1x1.",
            fix=knob,
            details="Shape trace:\n" + format_trace(trace),
        )

    for i, (out_c, (k, p, conv_stride)) in enumerate(zip(channels, convs, strict=True)):
        if p == "same":  # only ever at stride 1, where it keeps the size
            out = size
        else:
            out = (size + 2 * p - k) // conv_stride + 1
        kernels_used = out_c * c  # (output map, input map) pairs that own a k x k kernel
        kind = f"conv {k}x{k}"
        if conv_stride > 1:
            kind += f" /{conv_stride}"
        if i == 1 and c3_table in C3_TABLE_OF:
            table, label = C3_TABLE_OF[c3_table]
            kernels_used = sum(len(row) for row in table)
            kind += f" ({label})"
        name = f"C{index}"
        index += 1
        rf, jump = rf + (k - 1) * jump, jump * conv_stride
        trace.append(
            LayerInfo(name, kind, (out_c, out, out), out * out * kernels_used * k * k, rf, jump)
        )
        if out < 1:
            fail(
                name,
                "Use a smaller model.kernel_size, more model.padding (or padding=same), "
                "fewer model.channels, or pooling=none.",
            )
        size, c = out, out_c
        if pooling in ("stride", "none"):
            continue
        out = size // pool_size
        name = f"S{index}"
        index += 1
        rf, jump = rf + (pool_size - 1) * jump, jump * pool_size
        c *= copies[i]  # each feature map feeds copies[i] subsampling maps
        macs = c * out * out if pooling == "trainable" else 0
        kind = f"{pooling} pool {pool_size}x{pool_size}"
        if copies[i] > 1:
            kind += f", {copies[i]} per map"
        trace.append(LayerInfo(name, kind, (c, out, out), macs, rf, jump))
        if out < 1:
            fail(
                name,
                "Use a smaller model.kernel_size, padding=same, fewer model.channels, "
                "a smaller model.pool_size, or pooling=none.",
            )
        size = out
    features = c * size * size
    for j, width in enumerate(hidden):
        name = f"C{index}" if j == 0 and n_conv else f"F{index}"
        trace.append(
            LayerInfo(name, "full" if j else f"full (from {features})", (width,), features * width)
        )
        features = width
        index += 1
    trace.append(LayerInfo("output", "linear", (num_classes,), features * num_classes))
    return trace


def check_pool_maps(pool_maps: int | Sequence[int], pooling: str, n_conv: int) -> list[int]:
    """Subsampling maps per feature map, one value per conv layer; more than one only where
    each copy can differ, i.e. under trainable subsampling (its own coefficient and bias)."""
    copies = _per_layer(pool_maps, n_conv, "pool_maps")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in copies):
        raise ConfigError(
            f"model.pool_maps={pool_maps} is not a positive integer or a list of them.",
            fix="Give the subsampling maps per feature map, e.g. model.pool_maps=1 or [2,1].",
        )
    if any(n != 1 for n in copies) and pooling != "trainable":
        if pooling in ("stride", "none"):
            why = f"model.pooling={pooling} has no subsampling layer to give them"
        else:
            why = (
                f"under model.pooling={pooling} they would be identical copies; only trainable "
                "subsampling gives each its own coefficient and bias"
            )
        raise ConfigError(
            f"model.pool_maps={pool_maps} feeds each feature map to several subsampling maps, "
            f"but {why}.",
            fix="Use model.pooling=trainable with model.pool_maps, or model.pool_maps=1.",
        )
    return copies


def check_c3_table(name: str, channels: list[int], copies: list[int]) -> None:
    """A partial table fits one geometry: its input maps (S2) and its output maps (C3)."""
    table, label = C3_TABLE_OF[name]
    maps_in, maps_out = table_geometry(table)
    if len(channels) >= 2 and (channels[0] * copies[0], channels[1]) == (maps_in, maps_out):
        return
    given, fix = f"model.channels={channels}", f"model.channels=[{maps_in},{maps_out}]"
    if copies and copies[0] != 1:
        given += f" with model.pool_maps={copies}"
        fix += " and model.pool_maps=1"
    raise ConfigError(
        f"model.c3_table={name} ({label}) connects {maps_in} S2 maps to {maps_out} C3 maps, "
        f"but {given}.",
        fix=f"Use {fix} with that table, or model.c3_table=full.",
    )


class ConvBlock(nn.Sequential):
    """Convolution, optional batch norm, activation."""

    def __init__(
        self, conv: nn.Module, out_channels: int, activation: str, batch_norm: bool
    ) -> None:
        layers: list[nn.Module] = [conv]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(make_activation(activation))
        super().__init__(*layers)


class LeNet(nn.Module):
    """LeNet-style network: features (conv / pool blocks) then classifier (fully connected).

    Input: pixels in [0, 1], shape (N, in_channels, input_size, input_size). Output: logits
    (no activation on the last layer; the loss applies log-softmax).
    """

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
        check_choice("activation", activation, ACTIVATIONS)
        check_choice("pooling", pooling, POOLINGS)
        check_choice("c3_table", c3_table, C3_TABLES)
        check_choice("head", head, HEADS)
        channels, hidden = list(channels), list(hidden)
        copies = check_pool_maps(pool_maps, pooling, len(channels))
        if c3_table in C3_TABLE_OF:
            check_c3_table(c3_table, channels, copies)
        if head == "rbf" and not hidden:
            raise ConfigError(
                "model.head=rbf needs at least one hidden layer (F6).",
                fix="Set model.hidden, e.g. [120,84], or use model.head=linear.",
            )
        self.trace = trace_geometry(
            channels=channels,
            kernel_size=kernel_size,
            padding=padding,
            stride=stride,
            pooling=pooling,
            pool_size=pool_size,
            hidden=hidden,
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            input_padding=input_padding,
            c3_table=c3_table,
            pool_maps=copies,
        )
        convs = conv_settings(kernel_size, padding, stride, pooling, pool_size, len(channels))
        rows = iter(self.trace[1:])
        features: OrderedDict[str, nn.Module] = OrderedDict(
            input=InputStage(mean, std, input_padding)
        )
        c = in_channels
        for i, (out_c, (k, p, conv_stride)) in enumerate(zip(channels, convs, strict=True)):
            if i == 1 and c3_table in C3_TABLE_OF:
                conv: nn.Module = PartialConv2d(C3_TABLE_OF[c3_table][0], c, k, conv_stride, p)
            else:
                conv = nn.Conv2d(c, out_c, k, conv_stride, p)
            features[next(rows).name] = ConvBlock(conv, out_c, activation, batch_norm)
            c = out_c
            if pooling in ("stride", "none"):
                continue
            pool: nn.Module
            if pooling == "trainable":  # LeCun: sum, scale, bias, then squash
                pool = nn.Sequential(
                    Subsampling(c, pool_size, copies[i]), make_activation(activation)
                )
                c *= copies[i]
            elif pooling == "max":
                pool = nn.MaxPool2d(pool_size)
            elif pooling == "avg":
                pool = nn.AvgPool2d(pool_size)
            else:
                pool = nn.LPPool2d(2, pool_size)
            features[next(rows).name] = pool
        self.features = nn.Sequential(features)

        classifier: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        in_features = c * self.trace[len(features) - 1].shape[-1] ** 2
        for width in hidden:
            block: list[nn.Module] = [nn.Linear(in_features, width), make_activation(activation)]
            if dropout:
                block.append(nn.Dropout(dropout))
            classifier[next(rows).name] = nn.Sequential(*block)
            in_features = width
        output = (
            EuclideanRBF(in_features, num_classes)
            if head == "rbf"
            else nn.Linear(in_features, num_classes)
        )
        classifier[next(rows).name] = output
        self.classifier = nn.Sequential(classifier)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))

    def named_layers(self) -> dict[str, nn.Module]:
        """Layers by their trace name (C1, S2, ..., output), for inspection and pictures."""
        layers = dict(self.features.named_children())
        layers.update((k, v) for k, v in self.classifier.named_children() if k != "flatten")
        return layers
