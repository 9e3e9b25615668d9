"""Network builders: the LeNet family (one builder, many knobs) and the MLP baseline.

The names below load torch on first use, so `lenet_cli.models.choices` (the choice lists the
config schema reads) can be imported without it. Checkpoints name their network class as
`lenet_cli.models.<Name>`; those names are kept stable.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LayerInfo": "lenet_cli.models.lenet",
    "LeNet": "lenet_cli.models.lenet",
    "MLP": "lenet_cli.models.mlp",
    "RUNTIME_MODEL_KEYS": "lenet_cli.models.build",
    "build_network": "lenet_cli.models.build",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lenet_cli.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
