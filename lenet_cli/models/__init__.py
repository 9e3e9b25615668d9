"""Network builders: the LeNet family (one builder, many knobs) and the MLP baseline. Checkpoints
name their class `lenet_cli.models.<Name>` (kept stable). The classes load torch on first use, so
this package and its torch-free `choices` (read by the config schema) stay light."""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

from lenet_cli.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

_CLASSES = {"LeNet": "lenet", "MLP": "mlp"}
RUNTIME_MODEL_KEYS = ("name", "compile", "channels_last")  # model keys the classes do not take


def __getattr__(name: str) -> Any:
    if name not in _CLASSES:
        raise AttributeError(f"module 'lenet_cli.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_CLASSES[name]}"), name)


def build_network(model_cfg: dict[str, Any]) -> nn.Module:
    """Build the network of a `model` config (a plain dict); not through instantiate, so that a
    GeometryError or ConfigError reaches the user as itself, not wrapped in Hydra's exception."""
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
