"""Fully connected baseline: no convolution, no pooling, no weight sharing."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from lenet_cli.models.choices import ACTIVATIONS, check_choice
from lenet_cli.models.layers import InputStage, make_activation
from lenet_cli.models.lenet import LayerInfo


class MLP(nn.Module):
    """784-512-512-10 by default. Input: pixels in [0, 1], shape (N, C, H, W). Output: logits."""

    def __init__(
        self,
        hidden: Sequence[int] = (512, 512),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 28,
        mean: float = 0.0,
        std: float = 1.0,
    ) -> None:
        super().__init__()
        check_choice("activation", activation, ACTIVATIONS)
        in_features = in_channels * input_size * input_size
        self.trace = [
            LayerInfo("input", "normalise", (in_channels, input_size, input_size), 0, 1, 1)
        ]
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            input=InputStage(mean, std), flatten=nn.Flatten()
        )
        for index, width in enumerate(hidden, start=1):
            block: list[nn.Module] = [nn.Linear(in_features, width)]
            if batch_norm:
                block.append(nn.BatchNorm1d(width))
            block.append(make_activation(activation))
            if dropout:
                block.append(nn.Dropout(dropout))
            layers[f"F{index}"] = nn.Sequential(*block)
            self.trace.append(LayerInfo(f"F{index}", "full", (width,), in_features * width))
            in_features = width
        layers["output"] = nn.Linear(in_features, num_classes)
        self.trace.append(LayerInfo("output", "linear", (num_classes,), in_features * num_classes))
        self.layers = nn.Sequential(layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def named_layers(self) -> dict[str, nn.Module]:
        return {k: v for k, v in self.layers.named_children() if k != "flatten"}
