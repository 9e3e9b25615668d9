"""Composing the config tree and checking it in one place, before anything is trained.

SCHEMA is a table, not an OmegaConf structured config: those check types but not ranges, their
errors name a type rather than what a user may write, and they stop at the first bad value."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lenet_cli.errors import ConfigError
from lenet_cli.models.choices import ACTIVATIONS, C3_TABLES, HEADS, POOLINGS

CONFIG_MODULE = "lenet_cli.conf"
CONFIG_PATH = "pkg://" + CONFIG_MODULE

DATASETS = ("MNIST", "FashionMNIST", "KMNIST")  # the idx data sets torchvision names
PRECISIONS = ("32-true", "32", "64-true", "64", "bf16-mixed", "16-mixed", "bf16-true", "16-true")
PRECISIONS += ("transformer-engine",)  # needs a CUDA GPU and its package (lenet_cli/devices.py)
# data.augment: none, today's shifts and rotations, or the 1998 paper's affine distortions; true
# and false, the older spelling, still run old commands and the configs saved with checkpoints.
AUGMENTATIONS = ("none", "shift_rotate", "affine")


def augmentation(value: Any) -> str:
    """data.augment as one of AUGMENTATIONS: the one place that reads true and false (and refuses
    other values for a Python caller of LeNetDataModule, which validate() never saw)."""
    if isinstance(value, bool):
        return "shift_rotate" if value else "none"
    if value in AUGMENTATIONS:
        return value
    raise ConfigError(
        f"data.augment={value!r} is not a known augmentation.",
        fix=f"Choose one of: {', '.join(AUGMENTATIONS)} (true means shift_rotate, false none).",
    )


Check = Callable[[Any], bool]


# type(v), not isinstance: true and false are not numbers here, though Python counts them.
def integer(low: int) -> Check:
    return lambda v: type(v) is int and v >= low


def number(low: float, high: float = float("inf"), *, upto: bool = False) -> Check:
    return lambda v: type(v) in (int, float) and low <= v and (v <= high if upto else v < high)


def listed(one: Check, *, or_one: bool = False) -> Check:
    """A list whose every item passes `one` (or, with `or_one`, also a single such value)."""
    return lambda v: (
        (or_one and one(v)) or (isinstance(v, (list, tuple)) and all(one(x) for x in v))
    )


def choice(options: tuple, said: str = "") -> tuple[str, Check]:
    return said or "one of " + ", ".join(options), lambda v: v in options


# Each key: what a user may write (shown in the error), and the check.
BOOLEAN = ("true or false", lambda v: isinstance(v, bool))
POSITIVE = ("a positive integer", integer(1))
COUNT = ("an integer >= 0", integer(0))
FRACTION = ("a number in [0, 1)", number(0, 1))
PER_LAYER = (
    "a positive integer, or a list of them (one per conv layer)",
    listed(integer(1), or_one=True),
)
BATCHES = (
    "null, an integer >= 0 or a fraction in [0, 1]",
    lambda v: v is None or integer(0)(v) or isinstance(v, float) and 0 <= v <= 1,
)
SCHEMA: dict[str, tuple[str, Check]] = {
    "seed": ("an integer >= 0, or null for a random seed", lambda v: v is None or integer(0)(v)),
    "test": BOOLEAN,
    "label_smoothing": FRACTION,
    "model.kernel_size": PER_LAYER,
    "model.padding": (
        "an integer >= 0, 'same', or a list of them",
        listed(lambda v: integer(0)(v) or v == "same", or_one=True),
    ),
    "model.stride": POSITIVE,
    "model.pool_size": POSITIVE,
    "model.input_padding": COUNT,
    "model.channels": ("a list of positive integers, e.g. [6,16]", listed(integer(1))),
    "model.hidden": ("a list of positive integers, e.g. [120,84] or []", listed(integer(1))),
    "model.dropout": FRACTION,
    "model.batch_norm": BOOLEAN,
    "model.compile": BOOLEAN,
    "model.channels_last": BOOLEAN,
    "model.activation": choice(ACTIVATIONS),
    "model.pooling": choice(POOLINGS),
    "model.c3_table": choice(C3_TABLES, " or ".join(C3_TABLES)),
    "model.pool_maps": PER_LAYER,
    "model.head": choice(HEADS, " or ".join(HEADS)),
    "data.dataset": choice(DATASETS),
    "data.batch_size": POSITIVE,
    "data.eval_batch_size": POSITIVE,
    "data.val_size": COUNT,
    "data.split_seed": COUNT,
    "data.augment": (
        "one of " + ", ".join(AUGMENTATIONS) + " (or true = shift_rotate, false = none)",
        lambda v: isinstance(v, bool) or v in AUGMENTATIONS,
    ),
    "data.download": BOOLEAN,
    "data.max_shift": ("a number >= 0 (pixels)", number(0, 28)),
    "data.max_rotation": ("a number in [0, 180] (degrees)", number(0, 180, upto=True)),
    "data.affine.translate": ("a number >= 0 (pixels)", number(0, 28)),
    "data.affine.scale": FRACTION,
    "data.affine.squeeze": FRACTION,
    "data.affine.shear": ("a number >= 0", number(0)),
    "data.on_device": choice(("auto", True, False), "auto, true or false"),
    "optimizer.lr": ("a positive number, e.g. 0.001", lambda v: number(0)(v) and v > 0),
    "optimizer.weight_decay": ("a number >= 0", number(0)),
    "optimizer.momentum": FRACTION,
    "optimizer.fused": ("true, false or null", lambda v: v is None or isinstance(v, bool)),
    "trainer.max_epochs": POSITIVE,
    "trainer.accelerator": choice(("auto", "cpu", "gpu", "cuda", "mps")),
    "trainer.devices": (
        "auto, a positive integer, -1 (all) or a list of device ids",
        lambda v: v == "auto" or integer(-1)(v) and v != 0 or listed(integer(0))(v),
    ),
    "trainer.num_nodes": POSITIVE,
    "trainer.precision": ("one of " + ", ".join(PRECISIONS), lambda v: str(v) in PRECISIONS),
    "trainer.deterministic": choice((True, False, "warn"), "true, false or 'warn'"),
    "trainer.log_every_n_steps": POSITIVE,
    "trainer.limit_train_batches": BATCHES,
    "trainer.limit_val_batches": BATCHES,
    "trainer.limit_test_batches": BATCHES,
    "trainer.fast_dev_run": (
        "true, false or a number of batches",
        lambda v: isinstance(v, bool) or integer(1)(v),
    ),
    "logger.images": BOOLEAN,
    "console.verbose": BOOLEAN,
    "callbacks.pictures.probe_samples": POSITIVE,
    "mistakes": ("an integer >= 0 (how many wrong answers worst_mistakes.png shows)", integer(0)),
}
REQUIRED = ("data.batch_size", "optimizer.lr", "trainer.max_epochs")
# Keys that earlier versions had, with what to do instead.
REMOVED_KEYS = {
    "data.num_workers": "Remove it: batches are sliced from the data set held in memory (on the "
    "GPU when training there), so loader worker processes would only copy them.",
}

_ABSENT = object()


def validate(cfg: DictConfig) -> None:
    """Check every value of the composed config against SCHEMA; one error lists every problem."""
    problems = []
    for key, (allowed, check) in SCHEMA.items():
        try:
            value = OmegaConf.select(cfg, key, default=_ABSENT)
        except Exception as error:  # an interpolation that cannot resolve
            problems.append((key, f"cannot be resolved ({error})", allowed))
            continue
        if value is _ABSENT:
            # A group the command does not compose at all (lenet-eval has no optimizer) is fine.
            if key in REQUIRED and key.split(".")[0] in cfg:
                problems.append((key, "is missing", allowed))
            continue
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if not check(value):
            problems.append((key, f"is {value!r}", allowed))
    if problems:
        lines = [f"{key} {what}; allowed: {allowed}." for key, what, allowed in problems[:8]]
        first_key, _, allowed = problems[0]
        # The first thing the rule allows: "one of relu, tanh" -> relu.
        example = allowed.removeprefix("one of ").split(",")[0].split(" (")[0]
        raise ConfigError(
            "\n".join(lines),
            fix=f"Fix the value on the command line, e.g. {first_key}=<{example}>.",
        )
    if "trainer" in cfg:
        check_trainer(cfg.trainer, cfg.get("optimizer"))


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved job config as plain Python (without Hydra's own `hydra` section)."""
    return OmegaConf.to_container(
        OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True
    )


def all_keys(node: dict, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a config as plain Python (unresolved: only the keys matter here)."""
    for key, value in node.items():
        yield prefix + key
        if isinstance(value, dict):
            yield from all_keys(value, f"{prefix}{key}.")


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)


def compose_checked(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose like the Hydra app; unknown options and keys become ConfigErrors with the fix."""
    from hydra import errors

    try:
        return _compose(config_name, overrides)
    except errors.MissingConfigException as error:
        if error.options is None:  # Hydra lists the options only when a group's option is missing
            raise ConfigError(str(error).splitlines()[0], fix="Check the option name.") from None
        group, _, option = error.missing_cfg_file.rpartition("/")
        raise ConfigError(
            f"{group}={option} is not a known {group} option.",
            fix=f"Available {group} options: {', '.join(error.options) or '(none)'}.",
        ) from None
    except errors.OverrideParseException as error:
        raise ConfigError(
            f"Cannot read the override: {str(error).splitlines()[0]}",
            fix="Overrides look like key=value (quote values with spaces or commas).",
        ) from None
    except errors.ConfigCompositionException as error:
        raise _unknown_key(config_name, overrides, f"{error} {error.__cause__ or ''}") from None


def _unknown_key(config_name: str, overrides: list[str], text: str) -> ConfigError:
    """Hydra could not override, add or delete a key: name it, with the closest one there is."""
    found = re.search(r"Could not (?:override|delete from config\.) '([\w.\-/]+)'", text)
    if not found:  # e.g. +key=value for a key that is there: Hydra's next lines say what to do
        said = text.strip().splitlines()
        return ConfigError(said[0], fix=" ".join(said[1:]) or "Check the override.")
    key = found.group(1)
    if key in REMOVED_KEYS:
        return ConfigError(f"{key} no longer exists.", fix=REMOVED_KEYS[key])
    base = _compose(config_name, [o for o in overrides if not o.lstrip("+~").startswith(key)])
    keys = list(all_keys(OmegaConf.to_container(base)))
    siblings = [k for k in keys if k.rpartition(".")[0] == key.rpartition(".")[0]]
    # The closest key: among its siblings first, then anywhere.
    match = [m for pool in (siblings, keys) for m in difflib.get_close_matches(key, pool, n=1)]
    hint = f"Did you mean {match[0]}?" if match else "Run `lenet-train --cfg job` to list the keys."
    what = "a config group" if "No match in the defaults list" in text else "a key of the config"
    return ConfigError(
        f"{key} is not {what}.", fix=f"{hint} (To add a new key on purpose, use +{key}=...)"
    )


def check_trainer(trainer: DictConfig, optimizer: DictConfig | None) -> None:
    """What no single key shows. The last epoch must be validated: otherwise the best checkpoint,
    which the test uses, comes from an earlier epoch and the training after it is dropped.
    Lightning refuses to clip the gradients of a fused optimiser under mixed precision (the
    update unscales them itself): say so before training starts, not at its first step."""
    every, epochs = trainer.get("check_val_every_n_epoch") or 1, trainer.max_epochs
    if isinstance(every, int) and every > 1 and epochs % every:
        last = epochs - epochs % every
        raise ConfigError(
            f"trainer.check_val_every_n_epoch={every} with trainer.max_epochs={epochs}: the last "
            "epoch would never be validated, so the checkpoint that the test uses would "
            + (f"come from epoch {last}." if last else "not be chosen by validation at all."),
            fix=f"Choose a max_epochs that is a multiple of {every}, or "
            f"trainer.check_val_every_n_epoch={epochs} (validate once, at the end).",
        )
    precision = str(trainer.get("precision"))
    mixed = precision.endswith("-mixed") or precision in ("16", "bf16")
    fused = bool(optimizer is not None and optimizer.get("fused"))
    if fused and mixed and trainer.get("gradient_clip_val"):
        raise ConfigError(
            f"optimizer.fused=true cannot be combined with gradient clipping "
            f"(trainer.gradient_clip_val={trainer.gradient_clip_val}) at "
            f"trainer.precision={precision}.",
            fix="Use optimizer.fused=null, or trainer.precision=32-true.",
        )
