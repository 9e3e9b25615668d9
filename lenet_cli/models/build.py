"""Building a network from its `model` config, without Hydra's instantiate and without Lightning."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from lenet_cli.errors import ConfigError

# Keys of the model config that are not arguments of the network class.
RUNTIME_MODEL_KEYS = ("name", "compile", "channels_last")


def build_network(model_cfg: dict[str, Any]) -> nn.Module:
    """Build the network described by a `model` config (a plain dict).

    Called directly rather than through hydra.utils.instantiate, so that a GeometryError or
    ConfigError from the builder reaches the user as itself, not wrapped in Hydra's exception.
    """
    from hydra.utils import get_class

    kwargs = {k: v for k, v in dict(model_cfg).items() if k not in RUNTIME_MODEL_KEYS}
    cls = get_class(kwargs.pop("_target_"))
    accepted = inspect.signature(cls).parameters
    unknown = sorted(k for k in kwargs if k not in accepted)
    if unknown:
        raise ConfigError(
            f"model.{unknown[0]} is not a setting of {cls.__name__}.",
            fix=f"{cls.__name__} takes: {', '.join(accepted)}.",
        )
    return cls(**kwargs)
