"""What a person sees in an 80-column terminal: a run in one screen, a sweep in a few lines."""

from __future__ import annotations

from pathlib import Path

from conftest import TINY, run_cli


def _lines(result) -> list[str]:
    return (result.stdout + result.stderr).splitlines()


def test_a_run_fits_in_one_screen_with_its_card(tmp_path: Path, tiny_data: Path) -> None:
    result = run_cli(*TINY, cwd=tmp_path, data=tiny_data, env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = _lines(result)
    assert len(lines) <= 40, "\n".join(lines)
    text = "\n".join(lines)
    for shown in ("60,850 parameters", "1,000 train", "200 val", "400 test", "batch 50",
                  "one cycle", "seed", "run folder", "lenet-train: done"):  # fmt: skip
        assert shown in text, shown
    assert "FLOPs" not in text and "train_acc" not in text and "config" not in lines[0]
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    (run,) = (tmp_path / "outputs").glob("*/*")
    assert "model" in (run / "config_tree.txt").read_text()  # the whole config, in the folder


def test_verbose_brings_back_the_config_and_the_layers(tmp_path: Path, tiny_data: Path) -> None:
    result = run_cli(*TINY, "console.verbose=true", cwd=tmp_path, data=tiny_data)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout + result.stderr
    assert "config" in text and "_target_" in text  # the tree
    assert "MACs / image" in text and "60,850" in text  # the network's layers
    assert "FLOPs" not in text


def test_a_diverging_run_shows_its_panel_in_the_first_screen(
    tmp_path: Path, tiny_data: Path
) -> None:
    result = run_cli(
        *TINY, "model=modern", "optimizer.lr=1e30", cwd=tmp_path, data=tiny_data,
        env={"COLUMNS": "80"},
    )  # fmt: skip
    assert result.returncode == 1
    lines = _lines(result)
    first = next(i for i, line in enumerate(lines) if "Training failed" in line)
    assert first < 40 and len(lines) <= 40, "\n".join(lines)


def test_a_four_job_grid_prints_one_line_per_job(tmp_path: Path, tiny_data: Path) -> None:
    result = run_cli(
        "-m", "model.activation=relu,tanh", "model.pooling=max,avg", *TINY,
        cwd=tmp_path, data=tiny_data, env={"COLUMNS": "80"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = _lines(result)
    assert len(lines) <= 25, "\n".join(lines)
    jobs = [line for line in lines if line.startswith("job ")]
    assert len(jobs) == 4 and "activation=relu pooling=max  ok" in jobs[0]
    assert "1/4" in jobs[0] and "left" in jobs[0] and "4/4" in jobs[-1]
    assert "Epoch" not in "\n".join(lines) and "sweep summary: 4 jobs" in "\n".join(lines)
