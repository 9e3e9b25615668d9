"""Errors a user can cause. Each carries a short title, what went wrong, and how to fix it.

The command-line entry points turn them into a rich panel and an exit code (2: configuration,
1: runtime) instead of a traceback.
"""

from __future__ import annotations


class LenetError(Exception):
    exit_code = 1
    title = "lenet-cli error"
    # Raised by every process of a distributed run at once (a diverged loss, an interrupt):
    # only global rank 0 shows the panel; the others exit with the same code, silently.
    every_rank = False

    def __init__(self, message: str, fix: str | None = None, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.details = details


class ConfigError(LenetError):
    """The configuration (overrides, YAML) asks for something impossible or unknown."""

    exit_code = 2
    title = "Configuration error"


class GeometryError(ConfigError):
    """A feature map would shrink below 1x1: shown with the layer-by-layer shape trace."""

    title = "Impossible network geometry"


class DataError(LenetError):
    """The data set is missing, truncated or corrupt."""

    title = "Data error"


class CheckpointError(LenetError):
    """A checkpoint is missing, not a checkpoint, or for another architecture."""

    title = "Checkpoint error"


class DeviceError(ConfigError):
    """The requested accelerator or device count is not available on this machine."""

    title = "Device not available"


class TrainingError(LenetError):
    """Training diverged (NaN/inf loss) or failed at run time."""

    title = "Training failed"


class DiskFull(LenetError):
    """A write of the run failed for lack of space (or a quota, or a read-only file system)."""

    title = "Disk full"


class Interrupted(LenetError):
    """Ctrl-C or SIGTERM stopped training; last.ckpt holds where it stopped."""

    exit_code = 130  # the shell's code for a run stopped by Ctrl-C
    title = "Interrupted"
    every_rank = True


class Refused(SystemExit):
    """Carries a LenetError past code that catches every Exception (Hydra runs launchers inside
    such a handler and would print a traceback); the command shows it as a panel. Where nothing
    catches it, it ends the process with the error's exit code all the same."""

    def __init__(self, error: LenetError) -> None:
        super().__init__(error.exit_code)
        self.error = error

    def __reduce__(self):  # a joblib worker sends it to the launching process
        return type(self), (self.error,)
