"""The model summary at the start of a fit: right counts, no metric rows, only when verbose."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import TINY, compose_train
from hydra.utils import instantiate

METRIC_ROW = re.compile(r"^\W*(train|val|test)_(acc|loss)", re.MULTILINE)


def tiny_fit(cfg, callbacks: list) -> tuple:
    """One training step of the configured module on the tiny data, with these callbacks."""
    import pytorch_lightning as pl

    from lenet_cli.config import plain_config
    from lenet_cli.training.module import LeNetModule

    plain = plain_config(cfg)
    module = LeNetModule(plain["model"], plain["optimizer"], None)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=callbacks,
    )  # enable_model_summary is left at Lightning's default (true)
    trainer.fit(module, datamodule=instantiate(cfg.data, seed=0, _recursive_=False))
    return trainer, module


def cells(out: str) -> dict[str, list[str]]:
    """Table rows by their first cell."""
    rows = (line.strip("│┃ ").split("│") for line in out.splitlines() if "│" in line)
    return {row[0].strip(): [c.strip() for c in row[1:]] for row in rows}


@pytest.mark.parametrize("model", ["classic", "modern"])
def test_verbose_summary_has_right_counts_and_no_metric_rows(
    model, tiny_data: Path, tmp_path: Path, capsys
) -> None:
    from pytorch_lightning.callbacks import ModelSummary as LightningModelSummary

    from lenet_cli.models.describe import describe_network

    overrides = [f"data.root={tiny_data}", f"model={model}", *TINY, "++console.verbose=true"]
    cfg = compose_train(overrides, tmp_path)
    summary = instantiate(cfg.callbacks.model_summary)  # the configured one, switched on
    assert summary.enabled is True
    trainer, module = tiny_fit(cfg, [summary])
    out = capsys.readouterr().out
    # Ours counts as Lightning's summary: Lightning added no default one (FLOPs of zeros).
    assert [c for c in trainer.callbacks if isinstance(c, LightningModelSummary)] == [summary]
    assert "FLOPs" not in out and not METRIC_ROW.search(out), out
    rows = cells(out)
    net = module.net
    described = describe_network(net)
    params, macs = (int(v.replace(",", "")) for v in rows["total"][2:4])
    assert params == sum(p.numel() for p in net.parameters()) == described["total"]["params"]
    assert macs == described["total"]["macs"] > 0
    assert [row["name"] for row in described["layers"]] == [n for n in rows if n not in (
        "layer", "total")]  # fmt: skip
    assert rows["C1"][2:4] == [f"{6 * (5 * 5 + 1):,}", f"{28 * 28 * 6 * 25:,}"]


def test_summary_prints_nothing_unless_verbose(tiny_data: Path, tmp_path: Path, capsys) -> None:
    cfg = compose_train([f"data.root={tiny_data}", *TINY], tmp_path)
    summary = instantiate(cfg.callbacks.model_summary)
    assert summary.enabled is False  # console.verbose defaults to false
    tiny_fit(cfg, [summary])
    assert capsys.readouterr().out.strip() == ""
