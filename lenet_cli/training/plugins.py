"""Lightning plugins of a training run: the trainer's CheckpointIO."""

from __future__ import annotations

from typing import Any

import torch
from lightning_fabric.plugins import TorchCheckpointIO

from lenet_cli.checkpoint_io import read_checkpoint
from lenet_cli.files import write_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """Every checkpoint is written to a temporary file beside its target, flushed and renamed
    over it, so a reader never sees half a file; every one Lightning reads back (resume, test of
    the best model) is loaded weights-only, whatever torch's default for `weights_only` is."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        # What TorchCheckpointIO lacks: its fsspec transaction writes the temporary file in the
        # system's temp folder (moved by copying across filesystems) and never fsyncs it.
        write_atomic(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # A checkpoint is untrusted input: never unpickle code, even where asked to.
        return read_checkpoint(path, map_location=map_location)
