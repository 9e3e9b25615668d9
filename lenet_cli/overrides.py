"""Command-line overrides, parsed in one place: Hydra's own parser for flags and overrides, the
key an override sets, a recorded command line merged with new overrides, one job of a sweep."""

from __future__ import annotations

import itertools
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser

from lenet_cli.errors import ConfigError


def parse_args(argv: list[str]) -> Any:
    """Hydra's own command-line parser (flags and overrides, exactly as hydra.main reads them).
    Hydra has no public API for it: get_args_parser (hydra-core 1.3.2 to 1.3.8) is the one
    internal this project uses, pinned by hydra-core<1.4 and watched by tests/test_help.py."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser().parse_args(argv)


def override_key(line: str) -> str:
    """The key an override sets: `++trainer.max_epochs=5` -> trainer.max_epochs."""
    return str(line).split("=", 1)[0].lstrip("+~")


def key_value(line: str) -> tuple[str, str]:
    """(key, value) of an override; `~key` (which deletes the key) has the value "(deleted)"."""
    _, equals, value = str(line).partition("=")
    return override_key(line), value if equals else "(deleted)"


def given_value(overrides: list[str], key: str) -> str | None:
    """The value the last override of `key` gives (key=v, +key=v, ++key=v), None if none does."""
    return dict(key_value(o) for o in overrides if "=" in str(o)).get(key)


def merge_overrides(recorded: list[str], given: list[str]) -> list[str]:
    """The recorded overrides with the given ones: a given key replaces the recorded one in its
    place (Hydra refuses a group chosen twice; a moved grid key renumbers jobs); new keys last."""
    given_by_key = {override_key(o): o for o in given}
    merged = [given_by_key.pop(override_key(o), o) for o in recorded]
    return merged + [o for o in given if override_key(o) in given_by_key]


def first_of_each_sweep(overrides: list[str]) -> list[str]:
    """One job of a multirun (the first value of each sweep), for checking keys before launching."""
    single = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if override.is_interval_sweep():  # an Optuna search range: check its low end
            single.append(f"{key}={override.value().start}")
        elif not override.is_sweep_override():
            single.append(override.input_line)
        elif override.value_type.name != "GLOB_CHOICE_SWEEP":  # a glob: the default stands in
            single.append(f"{key}={next(iter(override.sweep_string_iterator()))}")
    return single


def grid(lines: list[str], config_loader: Any = None, params: Any = None) -> list[list[str]]:
    """Every job of a grid sweep as its overrides, as Hydra's basic sweeper orders them: `params`
    (hydra.sweeper.params) before `lines`, a key given again keeps its first place (the last value
    wins), the last key varies fastest. Globs over config options need Hydra's config loader; a
    range to sample from is a ConfigError (a sweeper raises it as Refused: Hydra catches those)."""
    lines = [*(f"{key}={value}" for key, value in (params or {}).items()), *lines]
    choices: dict[str, list[str]] = {}
    for override in OverridesParser.create(config_loader=config_loader).parse_overrides(lines):
        key = override.get_key_element()
        if not override.is_sweep_override():
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise ConfigError(
                f"{override.input_line}: a range to sample from needs a search.",
                fix="Search it with hparams_search=optuna, or list values: key=a,b,c.",
            )
    return [list(job) for job in itertools.product(*choices.values())]
