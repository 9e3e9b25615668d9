"""experiment=lecun98: the paper's four LeNet rows from one command, and the table that sets the
measured errors next to the paper's (checked on a tiny run of the real command)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import TINY, run_cli
from omegaconf import OmegaConf

from lenet_cli.sweeps.summary import planned_jobs

# Rows in the paper's order: name, model, parameters, MACs (hand-computed in
# tests/test_models.py and conf/model/*.yaml), the paper's test error in percent.
ROWS = [
    ("LeNet-1", "lenet1", 2_578, 92_288, 1.70),
    ("LeNet-4", "lenet4", 52_698, 449_568, 1.10),
    ("LeNet-5", "classic", 60_850, 328_096, 0.95),
    ("LeNet-5, distortions", "classic", 60_850, 328_096, 0.80),
]


def compose_hydra(overrides: list[str]):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="lenet_cli.conf", version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def test_the_experiment_plans_four_rows_times_three_seeds() -> None:
    assert planned_jobs(compose_hydra(["experiment=lecun98"])) == (12, ["lecun98", "seed"])
    # A value on the command line replaces the experiment's list, as Hydra's sweeper does.
    assert planned_jobs(compose_hydra(["experiment=lecun98", "seed=7"])) == (4, ["lecun98"])
    fewer = compose_hydra(["experiment=lecun98"])  # as `-m experiment=lecun98 lecun98=a,b`
    OmegaConf.set_readonly(fewer, False)
    fewer.hydra.overrides.task.append("lecun98=lenet1,lenet5")
    assert planned_jobs(fewer) == (6, ["lecun98", "seed"])  # the rows given replace the four


@pytest.mark.parametrize(
    ("row", "model", "augment"),
    [("lenet1", "lenet1", "none"), ("lenet4", "lenet4", "none"),
     ("lenet5", "classic", "none"), ("lenet5_distortions", "classic", "affine")],
)  # fmt: skip
def test_each_row_trains_its_network_with_the_shared_recipe(
    row: str, model: str, augment: str
) -> None:
    cfg = compose_hydra(["experiment=lecun98", f"lecun98={row}"])
    assert cfg.model.name == model and cfg.data.augment == augment
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.optimizer.nesterov
    assert cfg.trainer.max_epochs == 20 and cfg.label_smoothing == 0.1
    assert cfg.scheduler._target_.endswith("OneCycleLR")


def test_a_tiny_lecun98_sweep_writes_the_table_next_to_the_paper(
    tmp_path: Path, tiny_data: Path
) -> None:
    tiny = [*TINY, "callbacks=none", "++trainer.limit_train_batches=3", "seed=1"]
    result = run_cli("-m", "experiment=lecun98", *tiny, cwd=tmp_path, data=tiny_data,
                     env={"LENET_THREADS_PER_JOB": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    assert "next to the paper" in result.stdout
    errors, seconds = {}, {}  # row name -> the test error its job measured (%), its fit_seconds
    for job in sweep.iterdir():
        if (job / "metrics.json").exists():
            config = (job / ".hydra" / "config.yaml").read_text()
            name = next(line.split(":", 1)[1].strip() for line in config.splitlines()
                        if line.startswith("  row:"))  # fmt: skip
            recorded = json.loads((job / "metrics.json").read_text())
            errors[name] = 100 * (1 - recorded["test/acc"])
            seconds[name] = recorded["fit_seconds"]
    assert len(errors) == 4
    with open(sweep / "reference.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["row"] for r in table] == [row[0] for row in ROWS]  # the paper's order
    for written, (name, model, params, macs, paper) in zip(table, ROWS, strict=True):
        assert (written["model"], int(written["params"]), int(written["macs"])) == (
            model, params, macs)  # fmt: skip
        assert int(written["runs"]) == 1 and written["test_error_std"] == ""  # one seed
        measured = errors[name.strip('"')]
        # The table carries the job's recorded training time (one seed: the mean is that run's).
        assert float(written["fit_seconds_mean"]) == round(seconds[name.strip('"')], 1)
        assert float(written["test_error_mean"]) == pytest.approx(measured, abs=1e-3)
        assert float(written["paper_test_error"]) == paper
        assert float(written["difference"]) == pytest.approx(measured - paper, abs=1e-3)
    markdown = (sweep / "reference.md").read_text()
    minutes = f"{seconds['LeNet-1'] / 60:.1f}"
    assert f"| LeNet-1 | lenet1 | 2,578 | 92,288 | 1 | {minutes} |" in markdown
    assert "| 1.70 |" in markdown and "| 0.80 |" in markdown
