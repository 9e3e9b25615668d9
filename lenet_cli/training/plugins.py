"""Lightning plugins of a training run.

`AtomicCheckpointIO` is the trainer's CheckpointIO (Lightning's extension point for how checkpoint
files are written and read): every checkpoint, whichever callback or hook asks for it, is written
to a temporary file beside its target, flushed to disk and renamed over it, so a reader (or a
resumed run) never sees half a file; and every checkpoint Lightning reads back (resume, test of
the best model) is loaded weights-only, whatever torch's default for `weights_only` is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_fabric.plugins import TorchCheckpointIO

from lenet_cli.checkpoint_io import read_checkpoint, save_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file + fsync + rename; torch.load(weights_only=True)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options.")
        save_atomic(checkpoint, Path(path))

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # A checkpoint is untrusted input: never unpickle code, even where asked to.
        return read_checkpoint(path, map_location=map_location)
