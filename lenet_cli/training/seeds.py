"""The run's seed: the one given, or one drawn for `seed=null`, the same in every process.

The processes of a DDP run cannot talk before torch.distributed is up: those Lightning starts
inherit the parent's seed (PL_GLOBAL_SEED, set by seed_everything); those srun or torchrun start
derive it from the launcher's id for the run, which is new for every launch.
"""

from __future__ import annotations

import hashlib
import os
import secrets

MAX_SEED = 2**31 - 1  # fits every generator that Lightning seeds (numpy needs < 2**32)
SEED_ENV = "PL_GLOBAL_SEED"  # what pytorch_lightning.seed_everything sets and reads


def run_seed(seed: int | None, shared_name: str | None = None, child: bool = False) -> int:
    """`seed` when given; else the parent's (a child process), one derived from `shared_name`
    (the launcher's id for the run), or a new random one."""
    if seed is not None:
        return int(seed)
    if child and os.environ.get(SEED_ENV, "").isdigit():
        return int(os.environ[SEED_ENV])
    if shared_name:
        digest = hashlib.sha256(shared_name.encode()).digest()
        return int.from_bytes(digest[:4], "big") % (MAX_SEED + 1)
    return secrets.randbelow(MAX_SEED + 1)
