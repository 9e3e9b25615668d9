"""The named choices of the model config, in one torch-free place.

The config schema (lenet_cli/config.py), the builders (layers.py, lenet.py, mlp.py) and the help
and error texts all read these tuples, so a new activation or pooling is added here and in its
factory, nowhere else. Importing this module loads neither torch nor Lightning.
"""

from __future__ import annotations

from lenet_cli.errors import ConfigError

ACTIVATIONS = ("relu", "tanh", "scaled_tanh", "sigmoid", "gelu", "silu", "leaky_relu", "elu")
POOLINGS = ("max", "avg", "trainable", "lp", "stride", "none")
# Which S2 maps each C3 map reads: LeNet-5's Table I (6 -> 16 maps), LeNet-1's table (4 -> 12
# maps, our reconstruction), or all maps. A partial table fits only its own geometry.
C3_TABLES = ("lecun", "lenet1", "full")
HEADS = ("linear", "rbf")  # the output layer: a linear layer, or the paper's Euclidean RBF units
CHOICES = {"activation": ACTIVATIONS, "pooling": POOLINGS, "c3_table": C3_TABLES, "head": HEADS}


def check_choices(**given: str) -> None:
    """Refuse a model.<key>=value that is not one of the key's choices, naming them."""
    for key, value in given.items():
        if value not in CHOICES[key]:
            raise ConfigError(
                f"model.{key}={value!r} is not a known {key}.",
                fix=f"Choose one of: {', '.join(CHOICES[key])}.",
            )
