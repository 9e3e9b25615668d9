"""lenet-eval: reproduces a training run's test accuracy, draws its pictures, refuses bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REAL_DATA, run_cli, run_folders
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from trained_runs import metrics, real_run, tiny_run

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_data: Path) -> Path:
    return tiny_run(tmp_path_factory.getbasetemp(), tiny_data)


def compose_eval(overrides: list[str]):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="lenet_cli.conf", version_base="1.3"):
        return compose("eval", overrides=overrides, return_hydra_config=True)


def test_eval_reproduces_the_run_and_writes_its_pictures(
    tmp_path: Path, tiny_data: Path, tiny: Path
) -> None:
    best = tiny / "checkpoints" / "best.ckpt"
    result = run_cli(f"ckpt_path={best}", cwd=tmp_path, data=tiny_data, command="lenet-eval")
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_folders(tmp_path)
    scores = json.loads((run / "metrics.json").read_text())
    trained = metrics(tiny)
    assert abs(scores["test/acc"] - trained["test/acc"]) <= 0.001
    assert scores["test/loss"] == pytest.approx(trained["test/loss"], abs=1e-4)
    assert scores["test/samples"] == 400
    per_class = [scores[f"test/acc_class_{k}"] for k in range(10)]
    assert all(0 <= a <= 1 for a in per_class) and min(per_class) < max(per_class)
    for picture in ("confusion_matrix.png", "worst_mistakes.png"):
        assert (run / picture).read_bytes()[:8] == PNG
    assert (run / "eval.log").exists() and (run / ".hydra" / "config.yaml").exists()

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"confusion_matrix", "mistakes/test"} <= set(events.Tags()["images"])
    assert "test/acc" in events.Tags()["scalars"]

    out = " ".join(result.stdout.split())
    assert "Per-class results" in out and "precision" in out and "recall" in out
    assert "lenet-eval: done" in out and f"{100 * scores['test/acc']:.2f}%" in out
    assert "Traceback" not in result.stderr


def test_missing_checkpoint_is_a_short_error_and_leaves_no_folder(
    tmp_path: Path, tiny_data: Path
) -> None:
    result = run_cli(
        "ckpt_path=nowhere/best.ckpt", cwd=tmp_path, data=tiny_data, command="lenet-eval"
    )
    assert result.returncode == 1
    text = " ".join(result.stderr.split())
    assert "nowhere/best.ckpt: no such file" in text and "Traceback" not in text
    assert not run_folders(tmp_path)


def test_eval_without_a_checkpoint_says_how_to_give_one() -> None:
    from lenet_cli.cli.eval import check_run
    from lenet_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="needs the checkpoint") as caught:
        check_run(compose_eval([]))
    assert "ckpt_path=" in caught.value.fix


def test_data_of_another_shape_is_refused_before_running(tiny: Path) -> None:
    from lenet_cli.cli.eval import check_run
    from lenet_cli.errors import ConfigError

    cfg = compose_eval([f"ckpt_path={tiny / 'checkpoints' / 'best.ckpt'}", "data.image_size=32"])
    with pytest.raises(ConfigError, match="1x28x28 images"):
        check_run(cfg)


def test_the_test_keeps_the_most_confident_wrong_answers_and_scores_each_class() -> None:
    import pytorch_lightning as pl
    from rich.console import Console
    from torch.utils.data import DataLoader, TensorDataset

    from lenet_cli.evaluation.report import per_class_table
    from lenet_cli.training.module import LeNetModule

    module = LeNetModule({"_target_": "lenet_cli.models.MLP", "hidden": [], "num_classes": 2}, {})
    module.net = torch.nn.Flatten()  # the "images" are the log-probabilities themselves
    module.mistakes_kept = 5
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95]])
    x, y = probabilities.log().view(4, 1, 1, 2), torch.tensor([0, 0, 1, 0])
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    batches = DataLoader(TensorDataset(x, y), batch_size=2)  # mistakes kept across batches
    trainer.test(module, dataloaders=batches, verbose=False)

    outcome = module.test_outcome
    assert outcome["true"].tolist() == [0, 0, 1] and outcome["predicted"].tolist() == [1, 1, 0]
    assert outcome["confidence"] == pytest.approx([0.95, 0.8, 0.6])  # images 3, 1, 2
    assert outcome["confusion"].tolist() == [[1, 2], [1, 0]]
    assert outcome["precision_class"][0] == pytest.approx(0.5)
    assert outcome["acc_class"][0] == pytest.approx(1 / 3)
    assert trainer.callback_metrics["test/acc_class_1"] == 0.0
    console = Console(record=True, width=120)
    console.print(per_class_table(outcome, ["0", "1"]))
    rows = [line.split() for line in console.export_text().splitlines()]
    # class, precision, recall, images, most often taken for (confused with 1, twice)
    assert ["│", "0", "│", "50.00%", "│", "33.33%", "│", "3", "│", "1", "(2)", "│"] in rows


@pytest.mark.skipif(not REAL_DATA, reason="set LENET_DATA_DIR to the real MNIST")
def test_real_mnist_eval_reproduces_the_training_run(tmp_path_factory, tmp_path: Path) -> None:
    from hydra.core.hydra_config import HydraConfig

    from lenet_cli.cli.eval import evaluate

    # In this process: the command's own run folder is test_eval_reproduces_the_run's part.
    run = real_run(tmp_path_factory.getbasetemp())
    best, data = run / "checkpoints" / "best.ckpt", Path(str(REAL_DATA)).resolve()
    cfg = compose_eval([f"ckpt_path={best}", f"data.root={data}", f"paths.output_dir={tmp_path}"])
    HydraConfig().set_config(cfg)
    evaluate(cfg)
    scores = json.loads((tmp_path / "metrics.json").read_text())
    assert scores["test/samples"] == 10_000
    assert abs(scores["test/acc"] - metrics(run)["test/acc"]) <= 0.001
    assert scores["test/acc"] > 0.95
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:8] == PNG
