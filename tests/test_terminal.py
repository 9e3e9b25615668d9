"""What a person sees in an 80-column terminal: a run in one screen, a sweep in a few lines.
(A diverging run's panel in the first screen: test_reliability.py.)"""

from __future__ import annotations

from pathlib import Path

from conftest import TINY, compose_train, run_cli
from trained_runs import tiny_output, tiny_run

# The TensorBoard pictures cost seconds a run and print nothing: off where only the text counts.
QUIET = [*TINY, "logger.images=false"]


def _lines(result) -> list[str]:
    return (result.stdout + result.stderr).splitlines()


def test_a_run_fits_in_one_screen_with_its_card(tmp_path_factory, tiny_data: Path) -> None:
    # The shared tiny run: lenet-train model=classic (the default) on TINY, in 80 columns.
    root = tmp_path_factory.getbasetemp()
    lines = "".join(tiny_output(root, tiny_data)).splitlines()
    assert len(lines) <= 40, "\n".join(lines)
    text = "\n".join(lines)
    for shown in ("60,850 parameters", "1,000 train", "200 val", "400 test", "batch 50",
                  "one cycle", "seed", "run folder", "lenet-train: done"):  # fmt: skip
        assert shown in text, shown
    assert "FLOPs" not in text and "train_acc" not in text and "config" not in lines[0]
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    run = tiny_run(root, tiny_data)
    assert "model" in (run / "config_tree.txt").read_text()  # the whole config, in the folder


def test_verbose_brings_back_the_config_and_the_layers(
    tmp_path: Path, tiny_data: Path, capsys
) -> None:
    from lenet_cli.cli.train import train

    # In this process: train() prints the tree and the layers (the command adds nothing here).
    train(compose_train([f"data.root={tiny_data}", *QUIET, "console.verbose=true"], tmp_path))
    text = "".join(capsys.readouterr())
    assert "config" in text and "_target_" in text  # the tree
    assert "MACs / image" in text and "60,850" in text  # the network's layers
    assert "FLOPs" not in text


def test_a_four_job_grid_prints_one_line_per_job(tmp_path: Path, tiny_data: Path) -> None:
    result = run_cli(
        "-m", "model.activation=relu,tanh", "model.pooling=max,avg", *QUIET,
        cwd=tmp_path, data=tiny_data, env={"COLUMNS": "80"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = _lines(result)
    assert len(lines) <= 25, "\n".join(lines)
    jobs = [line for line in lines if line.startswith("job ")]
    assert len(jobs) == 4 and "activation=relu pooling=max  ok" in jobs[0]
    assert "1/4" in jobs[0] and "left" in jobs[0] and "4/4" in jobs[-1]
    assert "Epoch" not in "\n".join(lines) and "sweep summary: 4 jobs" in "\n".join(lines)
