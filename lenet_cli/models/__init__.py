"""Network builders: the LeNet family (one builder, many knobs) and the MLP baseline."""

from lenet_cli.models.build import RUNTIME_MODEL_KEYS, build_network
from lenet_cli.models.lenet import LayerInfo, LeNet
from lenet_cli.models.mlp import MLP

__all__ = ["LayerInfo", "LeNet", "MLP", "RUNTIME_MODEL_KEYS", "build_network"]
