"""Errors a user can cause: what went wrong and how to fix it, shown by the commands as a panel
with its kind's title and exit code (2: configuration, 1: runtime) instead of a traceback."""

from __future__ import annotations


class LenetError(Exception):
    exit_code = 1
    title = "lenet-cli error"
    # Raised by every process of a distributed run at once (a diverged loss, an interrupt):
    # only global rank 0 shows the panel; the others exit with the same code, silently.
    every_rank = False

    def __init__(self, message: str, fix: str | None = None, details: str | None = None) -> None:
        super().__init__(message)
        self.message, self.fix, self.details = message, fix, details

    def __init_subclass__(cls, title: str = "", exit_code: int = 0, every_rank: bool = False):
        super().__init_subclass__()
        cls.title, cls.exit_code = title or cls.title, exit_code or cls.exit_code
        cls.every_rank = every_rank or cls.every_rank


class ConfigError(LenetError, title="Configuration error", exit_code=2):
    """The configuration (overrides, YAML) asks for something impossible or unknown."""


class GeometryError(ConfigError, title="Impossible network geometry"):
    """A feature map would shrink below 1x1: shown with the layer-by-layer shape trace."""


class DataError(LenetError, title="Data error"):
    """The data set is missing, truncated or corrupt."""


class CheckpointError(LenetError, title="Checkpoint error"):
    """A checkpoint is missing, not a checkpoint, or for another architecture."""


class DeviceError(ConfigError, title="Device not available"):
    """The requested accelerator or device count is not available on this machine."""


class TrainingError(LenetError, title="Training failed"):
    """Training diverged (NaN/inf loss) or failed at run time."""


class DiskFull(LenetError, title="Disk full"):
    """A write of the run failed for lack of space (or a quota, or a read-only file system)."""


class Interrupted(LenetError, title="Interrupted", exit_code=130, every_rank=True):
    """Ctrl-C or SIGTERM stopped training; last.ckpt holds where (130: the shell's Ctrl-C code)."""


class Refused(SystemExit):
    """Carries a LenetError past Hydra's `except Exception` around launchers (which would print a
    traceback) to the command's panel; uncaught, it exits with the error's code all the same."""

    def __init__(self, error: LenetError) -> None:
        super().__init__(error.exit_code)
        self.error = error

    def __reduce__(self):  # a joblib worker sends it to the launching process
        return type(self), (self.error,)
