"""Running a task function as a Hydra app, with lenet-cli's guarantees around it.

Before Hydra creates any folder, the command line is composed and validated (so a typo ends in a
short panel within a second, exit code 2, and leaves nothing behind), and the run folder is
claimed atomically so that two runs started in the same second never share it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lenet_cli.config import CONFIG_PATH, compose_checked, validate
from lenet_cli.errors import ConfigError, LenetError

# Flags that only print something: no run, no folder, no pre-check needed.
INFO_FLAGS = ("help", "hydra_help", "info", "shell_completion")


def _parse_args(argv: list[str]):
    from hydra._internal.utils import get_args_parser

    return get_args_parser().parse_args(argv)


def _first_of_each_sweep(overrides: list[str]) -> list[str]:
    """One job of a multirun (the first value of each sweep), for checking keys before launching."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    single = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            single.append(f"{override.get_key_element()}={first}")
        else:
            single.append(override.input_line)
    return single


def claim_folder(parent: Path, stamp: str) -> Path:
    """Create parent/stamp, or parent/stamp-2, -3... atomically: the folder is ours alone."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"Cannot create the output folder {parent}: {error.strerror}.",
            fix="Run from a folder you can write to, or set paths.output_root=/a/writable/folder.",
        ) from None
    for n in range(1, 1000):
        folder = parent / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
        except OSError as error:
            raise ConfigError(
                f"Cannot write to the output folder {parent}: {error.strerror}.",
                fix="Set paths.output_root=/a/writable/folder.",
            ) from None
    raise ConfigError(f"Too many runs in {parent} in one second.", fix="Try again.")


def _folder_override(cfg: DictConfig, overrides: list[str], multirun: bool) -> list[str]:
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if any(o.lstrip("+").startswith(key + "=") for o in overrides):
        return []  # the user (or a DDP launcher) chose the folder
    root = Path(str(cfg.paths.output_root))
    if multirun:
        root = root / "multirun"
    folder = claim_folder(root / time.strftime("%Y-%m-%d"), time.strftime("%H-%M-%S"))
    return [f"{key}={folder}"]


def precheck(config_name: str, argv: list[str], check_run: Callable[[DictConfig], None] | None) -> list[str]:
    """Compose and validate what Hydra will run; return extra overrides (the run folder)."""
    args = _parse_args(argv)
    if any(getattr(args, flag, False) for flag in INFO_FLAGS):
        return []
    overrides = list(args.overrides)
    composed = _first_of_each_sweep(overrides) if args.multirun else overrides
    cfg = compose_checked(config_name, composed)
    validate(cfg)
    if args.cfg or os.environ.get("LOCAL_RANK") not in (None, "0"):
        return []  # printing the config, or a DDP child rank that reuses the parent's folder
    if check_run is not None and not args.multirun:
        check_run(cfg)
    return _folder_override(cfg, overrides, args.multirun)


def run_app(
    task: Callable[[DictConfig], Any],
    config_name: str,
    check_run: Callable[[DictConfig], None] | None = None,
) -> None:
    """Entry point body of a lenet-cli Hydra command (lenet-train, lenet-eval)."""
    import hydra

    from lenet_cli.console import print_error

    try:
        sys.argv += precheck(config_name, sys.argv[1:], check_run)
    except LenetError as error:
        print_error(error)
        sys.exit(error.exit_code)

    def job(cfg: DictConfig) -> Any:
        from hydra.core.hydra_config import HydraConfig

        try:
            return task(cfg)
        except LenetError as error:
            print_error(error)
            if HydraConfig.get().mode.name == "MULTIRUN":
                raise  # the sweep records the failure and goes on with the other jobs
            sys.exit(error.exit_code)

    hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)(job)()
