"""Checkpoint files, for the trainer's CheckpointIO and every command that opens one (torch, not
Lightning). A checkpoint is untrusted input: `weights_only=True` refuses pickled code, and its
model config is built only when its `_target_` (an import path: it could name any function) is one
of our networks; a nested `_target_` stays a plain value. Lightning's `load_from_checkpoint` calls
whatever the stored hyper-parameters name, so it is not used.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from torch import nn

from lenet_cli.errors import CheckpointError

STATE_PREFIX = "net."  # LeNetModule keeps its network as `self.net`
HOW_TO_GET_ONE = "Use a .ckpt written by lenet-train: outputs/<date>/<time>/checkpoints/best.ckpt."


@dataclass
class Checkpoint:
    """A network rebuilt from a checkpoint (eval mode, CPU), with what it was built from."""

    path: Path
    network: nn.Module
    model_cfg: dict[str, Any]
    hyper_parameters: dict[str, Any]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the raw pixels the network takes."""
        size = int(self.model_cfg.get("input_size", 28))
        return int(self.model_cfg.get("in_channels", 1)), size, size

    @property
    def num_classes(self) -> int:
        return int(self.model_cfg.get("num_classes", 10))

    @property
    def name(self) -> str:
        return str(self.model_cfg.get("name") or self.model_cfg["_target_"].rsplit(".", 1)[-1])


def _fail(path: Path, problem: str, fix: str = HOW_TO_GET_ONE, details: str = "") -> NoReturn:
    raise CheckpointError(f"{path}: {problem}", fix=fix, details=details)


def _lines(error: BaseException, first: int = 0, count: int = 1) -> str:
    """`count` lines of an error's text from line `first`, stripped and cut short."""
    lines = [line.strip()[:240] for line in str(error).splitlines() if line.strip()]
    return "\n".join(lines[first : first + count])


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint's contents, loaded weights-only (on the CPU unless told otherwise)."""
    import torch

    path = Path(path)
    if not path.exists():
        _fail(path, "no such file.")
    if path.is_dir():
        best = path / "checkpoints" / "best.ckpt"
        fix = f"Did you mean {best}?" if best.is_file() else HOW_TO_GET_ONE
        _fail(path, "is a folder, not a checkpoint file.", fix=fix)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            contents = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except Exception as error:  # torch.load raises almost anything on arbitrary bytes
        if refused := re.search(r"Unsupported global: GLOBAL (\S+)", str(error)):
            _fail(
                path,
                f"holds a Python object ({refused.group(1)}) that weights-only loading "
                "refuses: a checkpoint may hold only tensors and plain values, so that opening "
                "it cannot run code.",
            )
        # torch's own text for these advises weights_only=False: exactly what must not be done.
        details = "" if "weights_only" in str(error) else f"{type(error).__name__}: {_lines(error)}"
        _fail(path, "is not a PyTorch checkpoint, or it is truncated or corrupt.", details=details)
    if not isinstance(contents, dict):
        _fail(path, f"is a PyTorch file holding a {type(contents).__name__}, not a checkpoint.")
    return contents


def load_checkpoint(path: str | Path, contents: dict[str, Any] | None = None) -> Checkpoint:
    """Rebuild the network a lenet-train checkpoint describes and load its weights (eval mode);
    `contents`: the checkpoint as read_checkpoint returned it, if it was read already."""
    from lenet_cli.models import MLP, LeNet, build_network

    path = Path(path)
    contents = read_checkpoint(path) if contents is None else contents
    hparams = contents.get("hyper_parameters")
    model = hparams.get("model") if isinstance(hparams, dict) else None
    if not isinstance(model, dict) or not isinstance(contents.get("state_dict"), dict):
        _fail(
            path,
            "is a PyTorch file but not a lenet-cli checkpoint (it has no "
            "hyper_parameters.model and state_dict from lenet-train).",
        )
    # The `_target_` a checkpoint may name: one of our networks, by its stable or its own path.
    stable = [f"lenet_cli.models.{cls.__name__}" for cls in (LeNet, MLP)]
    own = [f"{cls.__module__}.{cls.__name__}" for cls in (LeNet, MLP)]
    if model.get("_target_") not in stable + own:
        _fail(
            path,
            f"names the network class {model.get('_target_')!r}, which is not a lenet-cli network.",
            fix=f"lenet-cli builds {', '.join(stable)}; use a checkpoint written by lenet-train.",
        )
    try:
        network = build_network(model)
    except Exception as error:  # a hand-edited config makes a constructor raise anything
        _fail(
            path,
            "its stored model config does not build a network with this lenet-cli.",
            fix="Use the lenet-cli version that wrote it, or retrain with this one.",
            details=_lines(error),
        )
    ours = {k: v for k, v in contents["state_dict"].items() if k.startswith(STATE_PREFIX)}
    try:  # strict: torch names the missing, unexpected and misshapen weights
        network.load_state_dict({k.removeprefix(STATE_PREFIX): v for k, v in ours.items()})
    except RuntimeError as error:
        _fail(
            path,
            "its weights belong to another architecture than the network its config describes.",
            fix="The file was edited or mixed with another model's: use the checkpoint exactly as "
            "lenet-train wrote it.",
            details=_lines(error, first=1, count=3),
        )
    return Checkpoint(path, network.eval(), model, dict(hparams))


def check_resumable(path: str | Path, network: nn.Module) -> None:
    """The checkpoint is a lenet-cli checkpoint, holds weights for `network` (a network built
    for the check: they are loaded into it) and knows where its training batches stopped."""
    contents = read_checkpoint(path)
    stored = load_checkpoint(path, contents)
    try:  # strict: torch names the missing, unexpected and misshapen weights
        network.load_state_dict(stored.network.state_dict())
    except RuntimeError as error:
        raise CheckpointError(
            f"ckpt_path={path} holds a {stored.name} network that does not fit this run's "
            f"model={network.__class__.__name__}.",
            fix="Resume with the model overrides of the original run, or use "
            "resume=<its run folder>, which reuses them.",
            details=_lines(error, first=1, count=3),
        ) from None
    progress = contents.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
    started = progress.get("current", {}).get("completed", 0)
    # Lightning stores a DataModule's state under its class name (lenet_cli/training/datamodule.py).
    if started and not progress.get("is_last_batch", True) and "LeNetDataModule" not in contents:
        raise CheckpointError(
            f"ckpt_path={path} was written inside an epoch by an older lenet-cli, which did not "
            "record the position of its training batches: resuming it would repeat some and "
            "skip others.",
            fix="Resume from a checkpoint written at the end of an epoch (checkpoints/best.ckpt), "
            "or start the run again.",
        )


def checkpoint_seed(path: str | Path) -> int | None:
    """The seed the checkpoint's run shuffled its training batches with (recorded by its
    DataModule), or None: a run resumed with seed=null continues with its original seed."""
    state = read_checkpoint(path).get("LeNetDataModule", {}).get("train_batches", {})
    return int(state["seed"]) if "seed" in state else None
