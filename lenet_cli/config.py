"""Composing the config tree and checking it in one place, before anything is trained.

`compose_checked` composes exactly what `lenet-train` will compose and turns Hydra's composition
errors into ConfigErrors with the fix; `validate` checks every value against SCHEMA.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from lenet_cli.errors import ConfigError
from lenet_cli.models.choices import ACTIVATIONS, C3_TABLES, HEADS, POOLINGS

CONFIG_MODULE = "lenet_cli.conf"
CONFIG_PATH = "pkg://" + CONFIG_MODULE

DATASETS = ("MNIST", "FashionMNIST", "KMNIST")  # the idx data sets torchvision names
PRECISIONS = (
    "32-true",
    "32",
    "64-true",
    "64",
    "bf16-mixed",
    "16-mixed",
    "bf16-true",
    "16-true",
    "transformer-engine",
)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
# data.augment: how training images are distorted (none, today's shifts and rotations, or the
# 1998 paper's affine distortions). true and false are the older spelling, kept so that old
# commands and the configs saved next to old checkpoints still run.
AUGMENTATIONS = ("none", "shift_rotate", "affine")
AUGMENTATION_ALIASES = {True: "shift_rotate", False: "none"}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _listed(v: Any) -> list | None:
    return list(v) if isinstance(v, (list, tuple, ListConfig)) else None


@dataclass(frozen=True)
class Rule:
    key: str
    allowed: str  # what a user may write, shown in the error
    check: Callable[[Any], bool]
    required: bool = False


def positive_int(v: Any) -> bool:
    return _is_int(v) and v >= 1


def non_negative_int(v: Any) -> bool:
    return _is_int(v) and v >= 0


def positive_ints(v: Any) -> bool:
    return positive_int(v) or (_listed(v) is not None and all(positive_int(x) for x in _listed(v)))


def int_list(minimum: int) -> Callable[[Any], bool]:
    return lambda v: _listed(v) is not None and all(_is_int(x) and x >= minimum for x in _listed(v))


def padding_value(v: Any) -> bool:
    one = lambda x: non_negative_int(x) or x == "same"  # noqa: E731
    return one(v) or (_listed(v) is not None and all(one(x) for x in _listed(v)))


def choice(options: Iterable[str]) -> Callable[[Any], bool]:
    options = tuple(options)
    return lambda v: v in options


def number_in(low: float, high: float, low_open: bool = False, high_open: bool = True):
    def check(v: Any) -> bool:
        if not _is_number(v):
            return False
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

    return check


def boolean(v: Any) -> bool:
    return isinstance(v, bool)


def augmentation(value: Any) -> str:
    """data.augment as one of AUGMENTATIONS: the one place that reads true as shift_rotate and
    false as none (the DataModule, the run card and the HParams table all ask here)."""
    if isinstance(value, bool):
        return AUGMENTATION_ALIASES[value]
    if value in AUGMENTATIONS:
        return value
    raise ConfigError(
        f"data.augment={value!r} is not a known augmentation.",
        fix=f"Choose one of: {', '.join(AUGMENTATIONS)} (true means shift_rotate, false none).",
    )


def limit_batches(v: Any) -> bool:
    return v is None or (_is_int(v) and v >= 0) or (isinstance(v, float) and 0.0 <= v <= 1.0)


def devices_value(v: Any) -> bool:
    return v == "auto" or (_is_int(v) and (v >= 1 or v == -1)) or int_list(0)(v)


# Keys that earlier versions had, with what to do instead.
REMOVED_KEYS = {
    "data.num_workers": "Remove it: batches are sliced from the data set held in memory (on the "
    "GPU when training there), so loader worker processes would only copy them.",
}

SCHEMA: tuple[Rule, ...] = (
    Rule(
        "seed",
        "an integer >= 0, or null for a random seed",
        lambda v: v is None or non_negative_int(v),
    ),
    Rule("test", "true or false", boolean),
    Rule("label_smoothing", "a number in [0, 1)", number_in(0, 1)),
    Rule(
        "model.kernel_size",
        "a positive integer, or a list of them (one per conv layer)",
        positive_ints,
    ),
    Rule("model.padding", "an integer >= 0, 'same', or a list of them", padding_value),
    Rule("model.stride", "a positive integer", positive_int),
    Rule("model.pool_size", "a positive integer", positive_int),
    Rule("model.input_padding", "an integer >= 0", non_negative_int),
    Rule("model.channels", "a list of positive integers, e.g. [6,16]", int_list(1)),
    Rule("model.hidden", "a list of positive integers, e.g. [120,84] (may be empty)", int_list(1)),
    Rule("model.dropout", "a number in [0, 1)", number_in(0, 1)),
    Rule("model.batch_norm", "true or false", boolean),
    Rule("model.compile", "true or false", boolean),
    Rule("model.channels_last", "true or false", boolean),
    Rule("model.activation", "one of " + ", ".join(ACTIVATIONS), choice(ACTIVATIONS)),
    Rule("model.pooling", "one of " + ", ".join(POOLINGS), choice(POOLINGS)),
    Rule("model.c3_table", " or ".join(C3_TABLES), choice(C3_TABLES)),
    Rule(
        "model.pool_maps",
        "a positive integer, or a list of them (one per conv layer)",
        positive_ints,
    ),
    Rule("model.head", " or ".join(HEADS), choice(HEADS)),
    Rule("data.dataset", "one of " + ", ".join(DATASETS), choice(DATASETS)),
    Rule("data.batch_size", "a positive integer", positive_int, required=True),
    Rule("data.eval_batch_size", "a positive integer", positive_int),
    Rule("data.val_size", "an integer >= 0", non_negative_int),
    Rule("data.split_seed", "an integer >= 0", non_negative_int),
    Rule(
        "data.augment",
        "one of " + ", ".join(AUGMENTATIONS) + " (or true = shift_rotate, false = none)",
        lambda v: isinstance(v, bool) or v in AUGMENTATIONS,
    ),
    Rule("data.download", "true or false", boolean),
    Rule("data.max_shift", "a number >= 0 (pixels)", number_in(0, 28)),
    Rule("data.max_rotation", "a number in [0, 180] (degrees)", number_in(0, 180, high_open=False)),
    Rule("data.affine.translate", "a number >= 0 (pixels)", number_in(0, 28)),
    Rule("data.affine.scale", "a number in [0, 1)", number_in(0, 1)),
    Rule("data.affine.squeeze", "a number in [0, 1)", number_in(0, 1)),
    Rule("data.affine.shear", "a number >= 0", number_in(0, float("inf"))),
    Rule("data.on_device", "auto, true or false", lambda v: v in ("auto", True, False)),
    Rule(
        "optimizer.lr",
        "a positive number, e.g. 0.001",
        number_in(0, float("inf"), low_open=True),
        required=True,
    ),
    Rule("optimizer.weight_decay", "a number >= 0", number_in(0, float("inf"))),
    Rule("optimizer.momentum", "a number in [0, 1)", number_in(0, 1)),
    Rule("optimizer.fused", "true, false or null", lambda v: v is None or boolean(v)),
    Rule("trainer.max_epochs", "a positive integer", positive_int, required=True),
    Rule("trainer.accelerator", "one of " + ", ".join(ACCELERATORS), choice(ACCELERATORS)),
    Rule(
        "trainer.devices",
        "auto, a positive integer, -1 (all) or a list of device ids",
        devices_value,
    ),
    Rule("trainer.num_nodes", "a positive integer", positive_int),
    Rule("trainer.precision", "one of " + ", ".join(PRECISIONS), lambda v: str(v) in PRECISIONS),
    Rule("trainer.deterministic", "true, false or 'warn'", lambda v: v in (True, False, "warn")),
    Rule("trainer.log_every_n_steps", "a positive integer", positive_int),
    Rule(
        "trainer.limit_train_batches",
        "null, an integer >= 0 or a fraction in [0, 1]",
        limit_batches,
    ),
    Rule(
        "trainer.limit_val_batches", "null, an integer >= 0 or a fraction in [0, 1]", limit_batches
    ),
    Rule(
        "trainer.limit_test_batches", "null, an integer >= 0 or a fraction in [0, 1]", limit_batches
    ),
    Rule(
        "trainer.fast_dev_run",
        "true, false or a number of batches",
        lambda v: boolean(v) or positive_int(v),
    ),
    Rule("logger.images", "true or false", boolean),
    Rule("console.verbose", "true or false", boolean),
    Rule("callbacks.pictures.probe_samples", "a positive integer", positive_int),
)

_ABSENT = object()


def validate(cfg: DictConfig) -> None:
    """Check every value of the composed config against SCHEMA; one error lists every problem."""
    problems = []
    for rule in SCHEMA:
        try:
            value = OmegaConf.select(cfg, rule.key, default=_ABSENT)
        except Exception as error:  # an interpolation that cannot resolve
            problems.append((rule.key, f"cannot be resolved ({error})", rule.allowed))
            continue
        if value is _ABSENT:
            # A group the command does not compose at all (lenet-eval has no optimizer) is fine.
            if rule.required and rule.key.split(".")[0] in cfg:
                problems.append((rule.key, "is missing", rule.allowed))
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        if not rule.check(value):
            problems.append((rule.key, f"is {value!r}", rule.allowed))
    if problems:
        lines = [f"{key} {what}; allowed: {allowed}." for key, what, allowed in problems[:8]]
        first_key, _, allowed = problems[0]
        raise ConfigError(
            "\n".join(lines),
            fix=f"Fix the value on the command line, e.g. {first_key}=<{_example(allowed)}>.",
        )
    if "trainer" in cfg:
        check_validation_schedule(cfg.trainer)
        check_fused_clipping(cfg.trainer, cfg.get("optimizer"))


def _example(allowed: str) -> str:
    """The first thing a rule allows ("one of relu, tanh" -> relu; "a positive integer")."""
    return allowed.removeprefix("one of ").split(",")[0].split(" (")[0]


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved job config as plain Python (without Hydra's own `hydra` section)."""
    return {k: _resolved(cfg, k) for k in cfg if k != "hydra"}


def _resolved(cfg: DictConfig, key: str) -> Any:
    node = cfg[key]
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def all_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in cfg.keys():
        full = f"{prefix}{key}"
        keys.append(full)
        if OmegaConf.is_missing(cfg, key) or OmegaConf.is_interpolation(cfg, key):
            continue  # a leaf (resolving it here could fail for reasons beside the point)
        node = cfg[key]
        if isinstance(node, DictConfig):
            keys.extend(all_keys(node, full + "."))
    return keys


def closest_key(key: str, cfg: DictConfig) -> str | None:
    candidates = all_keys(cfg)
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    siblings = [k for k in candidates if k.rsplit(".", 1)[0] == parent] if parent else candidates
    match = difflib.get_close_matches(key, siblings, n=1, cutoff=0.6) or difflib.get_close_matches(
        key, candidates, n=1, cutoff=0.6
    )
    return match[0] if match else None


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)


def compose_checked(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose like the Hydra app; unknown options and keys become ConfigErrors with the fix."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )

    try:
        cfg = _compose(config_name, overrides)
    except MissingConfigException as error:
        text = str(error)
        found = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
        options = list(getattr(error, "options", None) or [])
        if found:
            group, option = found.groups()
            raise ConfigError(
                f"{group}={option} is not a known {group} option.",
                fix=f"Available {group} options: {', '.join(options) or '(none)'}.",
            ) from None
        raise ConfigError(text.splitlines()[0], fix="Check the option name.") from None
    except OverrideParseException as error:
        raise ConfigError(
            f"Cannot read the override: {str(error).splitlines()[0]}",
            fix="Overrides look like key=value (quote values with spaces or commas).",
        ) from None
    except ConfigCompositionException as error:
        text = f"{error} {error.__cause__ or ''}"
        found = re.search(r"Could not (?:override|append to|delete from) '?([\w.\-/]+)'?", text)
        if not found:
            raise ConfigError(text.strip().splitlines()[0], fix="Check the override.") from None
        key = found.group(1)
        if key in REMOVED_KEYS:
            raise ConfigError(f"{key} no longer exists.", fix=REMOVED_KEYS[key]) from None
        base = _compose(config_name, [o for o in overrides if not o.lstrip("+~").startswith(key)])
        suggestion = closest_key(key, base)
        fix = (
            f"Did you mean {suggestion}?"
            if suggestion
            else "Run `lenet-train --cfg job` to list the keys."
        )
        if "No match in the defaults list" in text:
            what = f"{key} is not a config group."
        else:
            what = f"{key} is not a key of the config."
        raise ConfigError(
            what, fix=fix + f" (To add a new key on purpose, use +{key}=...)"
        ) from None
    return cfg


def check_validation_schedule(trainer: DictConfig) -> None:
    """The last epoch is validated: otherwise the best checkpoint, which the test uses, comes from
    an earlier epoch and the training after it is silently dropped."""
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


def check_fused_clipping(trainer: DictConfig, optimizer: DictConfig | None) -> None:
    """Lightning refuses to clip the gradients of a fused optimiser under mixed precision (the
    update unscales them itself): say so before training starts, not at its first step."""
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
