"""The named choices of the model config, torch-free: the config schema, the builders' factories
and the help and error texts all read these, so a new choice is added here and in its factory."""

from __future__ import annotations

ACTIVATIONS = ("relu", "tanh", "scaled_tanh", "sigmoid", "gelu", "silu", "leaky_relu", "elu")
POOLINGS = ("max", "avg", "trainable", "lp", "stride", "none")
# Which S2 maps each C3 map reads: LeNet-5's Table I (6 -> 16 maps), LeNet-1's table (4 -> 12
# maps, our reconstruction), or all maps. A partial table fits only its own geometry.
C3_TABLES = ("lecun", "lenet1", "full")
HEADS = ("linear", "rbf")  # the output layer: a linear layer, or the paper's Euclidean RBF units
CHOICES = {"activation": ACTIVATIONS, "pooling": POOLINGS, "c3_table": C3_TABLES, "head": HEADS}
