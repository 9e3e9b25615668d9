"""Fully connected baseline: no convolution, no pooling, no weight sharing."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from lenet_cli.models.layers import InputStage
from lenet_cli.models.lenet import LayerInfo, TracedNetwork, full_layers


class MLP(TracedNetwork):
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
        shape = (in_channels, input_size, input_size)
        self.trace = [LayerInfo("input", "normalise", shape, 0, 1, 1)]
        # (N, C, H, W) pixels -> normalised, flattened -> F1, F2 ... -> (N, num_classes) logits
        dense = full_layers(self.trace, hidden, num_classes, activation, dropout, batch_norm)
        self.layers = nn.Sequential(OrderedDict(input=InputStage(mean, std), **dict(dense)))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
