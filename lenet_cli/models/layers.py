"""Building blocks of the LeNet family, including the pieces of the faithful 1998 LeNet-5 (LeCun
et al., "Gradient-Based Learning Applied to Document Recognition", section II.B, appendix A)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class ScaledTanh(nn.Module):
    """LeCun's f(a) = A tanh(S a) with A = 1.7159, S = 2/3 (appendix A): f(+-1) = +-1, where the
    gain is highest."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(2.0 / 3.0 * x)


ACTIVATION = {  # by their model.activation name (lenet_cli/models/choices.py)
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "scaled_tanh": ScaledTanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}


class Subsampling(nn.Module):
    """LeNet-5's S2/S4: each 2x2 block summed, times a trainable coefficient, plus a bias. With
    copies > 1 each feature map feeds that many subsampling maps, each with its own coefficient
    and bias (LeNet-4's S2: "8 subsampling maps connected in pairs")."""

    def __init__(self, channels: int, size: int = 2, copies: int = 1) -> None:
        super().__init__()
        self.size, self.copies = size, copies
        self.weight = nn.Parameter(torch.ones(channels * copies))
        self.bias = nn.Parameter(torch.zeros(channels * copies))
        # The feature map each subsampling map sums, as an index made once: repeat_interleave
        # would rebuild it on the host at every step. Not persistent: checkpoints stay as they were.
        source = torch.arange(channels).repeat_interleave(copies)
        self.register_buffer("source", source, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        summed = F.avg_pool2d(x, self.size) * (self.size * self.size)
        if self.copies > 1:  # the sum is shared; only the coefficient and bias differ
            summed = summed.index_select(1, self.source)
        return summed * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


Table = tuple[tuple[int, ...], ...]  # the input maps each output map reads

# Table I of the paper, which gives the rule in words: "The first six C3 feature maps take inputs
# from every contiguous subsets of three feature maps in S2. The next six take input from every
# contiguous subset of four. The next three take input from some discontinuous subsets of four.
# Finally, the last one takes input from all S2 feature maps."
LECUN_C3_TABLE: Table = tuple(
    tuple((first + step) % 6 for step in steps)
    for steps, firsts in (((0, 1, 2), 6), ((0, 1, 2, 3), 6), ((0, 1, 3, 4), 3), (range(6), 1))
    for first in range(firsts)
)

# LeNet-1's C3 (our choice; the 1998 paper does not print it): 12 maps in 4 groups, group i reads
# S2 map i alone, with map i+1 and with map i+2 (mod 4). 20 kernels, each S2 map read by 5 C3 maps,
# which with the rest of LeNet-1 gives the 2,578 parameters of the 1989 network it descends from.
LENET1_C3_TABLE: Table = tuple(
    (i,) if step == 0 else (i, (i + step) % 4) for i in range(4) for step in (0, 1, 2)
)

# The partial tables by their model.c3_table name, with the label the shape trace shows. Each
# belongs to one geometry: 1 + its largest S2 index input maps, one output map per row.
C3_TABLE_OF: dict[str, tuple[Table, str]] = {
    "lecun": (LECUN_C3_TABLE, "Table I"),
    "lenet1": (LENET1_C3_TABLE, "LeNet-1 table"),
}


class PartialConv2d(nn.Module):
    """A convolution whose output map i reads only the input maps in table[i]. Only connected
    kernels are parameters, so counts match the paper (C3: 1,516, not a masked conv's 2,416)."""

    def __init__(
        self, table: Table, in_channels: int, kernel_size: int, stride: int, padding: int | str
    ) -> None:
        super().__init__()
        out_channels = len(table)
        mask = torch.zeros(out_channels, in_channels, dtype=torch.bool)
        for out_map, in_maps in enumerate(table):
            mask[out_map, list(in_maps)] = True
        # Where each kernel goes in the full (out x in) weight, row-major like the mask, as an index
        # made once: assigning through the boolean mask would ask the device for its count (a
        # nonzero(), a wait for the host) at every step. Neither buffer is saved in checkpoints.
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("index", mask.flatten().nonzero().flatten(), persistent=False)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        # Initialised like nn.Conv2d, with the fan-in of the average output map's connections.
        bound = 1.0 / math.sqrt(kernel_size * kernel_size * mask.sum(1).float().mean().item())
        self.weight = nn.Parameter(
            torch.empty(len(self.index), kernel_size, kernel_size).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound))

    def full_weight(self) -> torch.Tensor:
        k = self.kernel_size
        weight = self.weight.new_zeros(self.out_channels * self.in_channels, k, k)
        weight = weight.index_copy(0, self.index, self.weight)
        return weight.view(self.out_channels, self.in_channels, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.full_weight(), self.bias, self.stride, self.padding)


class EuclideanRBF(nn.Module):
    """LeNet-5's output layer: y_i = sum_j (x_j - w_ij)^2 against fixed +1/-1 codes, returned
    as logits -y, so cross-entropy on them is the paper's loss (eq. 9 without its constant j).
    The codes are seeded pseudo-random bits, not the paper's 7x12 character bitmaps."""

    def __init__(self, in_features: int, num_classes: int, seed: int = 1998) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        bits = torch.randint(0, 2, (num_classes, in_features), generator=generator)
        self.register_buffer("codes", bits.float() * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Written out rather than torch.cdist, which torch's ONNX exporter cannot translate.
        return -(x.unsqueeze(1) - self.codes).pow(2).sum(-1)


class InputStage(nn.Module):
    """Pixels in [0, 1] -> border of background (0) -> normalised, inside the network so that
    an exported model takes raw pixels."""

    def __init__(self, mean: float, std: float, padding: int = 0) -> None:
        super().__init__()
        self.padding = padding
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding:
            x = F.pad(x, (self.padding,) * 4)
        return (x - self.mean) / self.std
