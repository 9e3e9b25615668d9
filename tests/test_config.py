"""Every option of every config group composes and passes validation; bad values are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, compose_train
from omegaconf import OmegaConf

from lenet_cli.config import compose_checked, validate
from lenet_cli.errors import ConfigError

GROUPS = [
    "model",
    "data",
    "optimizer",
    "scheduler",
    "trainer",
    "callbacks",
    "logger",
    "debug",
    "experiment",
]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((REPO / "conf" / g).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes(group: str, option: str, tmp_path: Path) -> None:
    cfg = compose_train([f"{group}={option}"], tmp_path)
    validate(cfg)
    for key in cfg:  # every interpolation resolves (hydra's own section needs a running job)
        if key != "hydra":
            assert (
                OmegaConf.to_yaml(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else True
            )
    assert cfg.hydra.runtime.choices[group] == option


def test_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    cfg = compose_train([], tmp_path)
    choices = cfg.hydra.runtime.choices
    assert (choices.model, choices.data, choices.optimizer, choices.scheduler) == (
        "classic",
        "mnist",
        "adam",
        "onecycle",
    )
    assert cfg.seed == 42 and cfg.ckpt_path is None and cfg.test is True
    assert cfg.hydra.job.chdir is False
    for key in ("kernel_size", "activation", "pooling", "padding", "channels", "hidden", "dropout"):
        assert key in cfg.model


def test_seed_zero_is_kept(tmp_path: Path) -> None:
    cfg = compose_train(["seed=0"], tmp_path)
    validate(cfg)
    assert cfg.seed == 0


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.kernel_size=abc", "model.kernel_size"),
        ("model.kernel_size=0", "model.kernel_size"),
        ("data.batch_size=0", "data.batch_size"),
        ("optimizer.lr=-1", "optimizer.lr"),
        ("trainer.max_epochs=-5", "trainer.max_epochs"),
        ("model.activation=swish", "model.activation"),
        ("model.pooling=median", "model.pooling"),
        ("model.dropout=1.5", "model.dropout"),
        ("seed=-1", "seed"),
        ("optimizer.fused=maybe", "optimizer.fused"),
    ],
)
def test_bad_values_are_refused_with_the_key(override: str, key: str) -> None:
    cfg = compose_checked("train", [override])
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    assert key in caught.value.message


@pytest.mark.parametrize("value", ["-1", "2.5", "true"])
def test_lenet_eval_refuses_a_bad_mistakes_count(value: str) -> None:
    cfg = compose_checked("eval", [f"mistakes={value}"])
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    assert "mistakes" in caught.value.message


def test_unknown_option_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        compose_checked("train", ["model=nonexistent"])
    assert "classic" in caught.value.fix and "modern" in caught.value.fix


def test_misspelt_key_suggests_the_closest() -> None:
    with pytest.raises(ConfigError) as caught:
        compose_checked("train", ["model.kernal_size=5"])
    assert "model.kernel_size" in caught.value.fix


def test_misspelt_group_suggests_the_closest() -> None:
    with pytest.raises(ConfigError) as caught:
        compose_checked("train", ["optimiser=sgd"])
    assert "optimizer" in caught.value.fix


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["trainer.check_val_every_n_epoch=2", "trainer.max_epochs=3"], True),
        (["trainer.check_val_every_n_epoch=2", "trainer.max_epochs=1"], True),
        (["trainer.check_val_every_n_epoch=2", "trainer.max_epochs=4"], False),
        (["experiment=fast", "trainer.max_epochs=5"], False),  # validates after its last epoch
    ],
)
def test_a_last_epoch_without_validation_is_refused(overrides: list[str], refused: bool) -> None:
    cfg = compose_checked("train", overrides)
    if not refused:
        validate(cfg)
        return
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    assert "the last epoch would never be validated" in caught.value.message
    assert "check_val_every_n_epoch" in caught.value.fix


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed", "32-true"])
def test_fused_adam_with_clipping_is_refused_under_mixed_precision(precision: str) -> None:
    # Lightning's mixed precision plugin raises at the first step for any optimiser that
    # unscales gradients in its own step (fused Adam); 32-true clips as usual.
    cfg = compose_checked(
        "train",
        [
            "optimizer.fused=true",
            "++trainer.gradient_clip_val=1.0",
            f"trainer.precision={precision}",
        ],
    )
    if precision == "32-true":
        validate(cfg)
        return
    with pytest.raises(ConfigError) as caught:
        validate(cfg)
    assert "optimizer.fused=null" in caught.value.fix


def test_a_removed_key_says_what_to_do_instead() -> None:
    with pytest.raises(ConfigError, match="data.num_workers no longer exists") as caught:
        compose_checked("train", ["data.num_workers=4"])
    assert "in memory" in caught.value.fix


@pytest.mark.parametrize("override", ["~nosuch", "+model.name=foo", "~model.name=wrong"])
def test_adding_or_deleting_keys_wrongly_is_a_config_error(override: str) -> None:
    with pytest.raises(ConfigError):  # a panel, not Hydra's traceback
        compose_checked("train", [override])
