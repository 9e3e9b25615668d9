"""Lightning plugins of a training run: the trainer's CheckpointIO."""

from __future__ import annotations

from typing import Any

import torch
from lightning_fabric.plugins import TorchCheckpointIO

from lenet_cli.checkpoint_io import read_checkpoint
from lenet_cli.files import write_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """The trainer's CheckpointIO (Lightning's extension point for how checkpoint files are written
    and read): every checkpoint, whichever callback or hook asks for it, is written to a temporary
    file beside its target, flushed to disk and renamed over it, so a reader (or a resumed run)
    never sees half a file; and every checkpoint Lightning reads back (resume, test of the best
    model) is loaded weights-only, whatever torch's default for `weights_only` is."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options.")
        # What TorchCheckpointIO lacks: its fsspec transaction writes the temporary file in the
        # system's temp folder (moved by copying across filesystems) and never fsyncs it.
        write_atomic(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # A checkpoint is untrusted input: never unpickle code, even where asked to.
        return read_checkpoint(path, map_location=map_location)
