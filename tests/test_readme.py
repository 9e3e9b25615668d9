"""The README's example commands, run on tiny settings: what a newcomer tries first works.

Every line of README.md's ```bash and ```console blocks (after `$ ` in a console block) that runs
one of the five commands is a test. A line whose comment says `needs ...` (a GPU, a cluster, a
database server) is skipped with that reason; one whose comment says `exit code N` must end so.
Placeholders are filled in: outputs/<date>/<time> with a tiny training run, photos/ with a few
drawn digits. Tiny settings are added after the README's own overrides (the last value of a key
wins). Single runs compose the line's config here and call the command's own function, as
test_train.py does; the commands without Hydra are called through their main(argv); sweeps,
--cfg and refusals run as the real command, because they are Hydra's own flow.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO, TINY, compose_train, run_cli, run_folders, synthetic_digits
from trained_runs import tiny_run

COMMANDS = ("lenet-train", "lenet-eval", "lenet-predict", "lenet-export", "lenet-inspect")
# The pictures are a fixed second or two per run: left out of the tiny runs.
FAST = [*TINY, "logger.images=false"]
PHOTOS = 3


def readme_examples() -> list[str]:
    text = (REPO / "README.md").read_text()
    examples = []
    for kind, block in re.findall(r"^```(bash|console)\n(.*?)^```", text, re.M | re.S):
        for line in block.splitlines():
            if kind == "console":
                if not line.startswith("$ "):
                    continue  # the command's output
                line = line[2:]
            if line.split(" ", 1)[0] in COMMANDS:
                examples.append(line.strip())
    return examples


EXAMPLES = readme_examples()


def test_the_readme_shows_every_command() -> None:
    assert {line.split()[0] for line in EXAMPLES} == set(COMMANDS)


@pytest.fixture
def filled(tmp_path_factory, tmp_path: Path, tiny_data: Path):
    """Replaces the README's placeholders in one argument; trains the tiny run only if asked."""

    def fill(arg: str) -> str:
        if "outputs/<date>/<time>" in arg:
            run = tiny_run(tmp_path_factory.getbasetemp(), tiny_data)
            arg = arg.replace("outputs/<date>/<time>", str(run))
        if arg.rstrip("/") == "photos":
            return str(draw_photos(tmp_path / "photos"))
        return arg

    return fill


def draw_photos(folder: Path) -> Path:
    """A few synthetic digits as photos: dark ink on light paper, four times larger."""
    from PIL import Image

    folder.mkdir(exist_ok=True)
    images, _ = synthetic_digits(PHOTOS, seed=3)
    for i, image in enumerate(images):
        paper = Image.fromarray(255 - image).resize((112, 112))
        paper.save(folder / f"digit_{i}.png")
    return folder


def compose(config: str, overrides: list[str], output_dir: Path):
    """The config `config` (train or eval) composed from a command line, as the command does."""
    if config == "train":
        return compose_train(overrides, output_dir)
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_module(config_module="lenet_cli.conf", version_base="1.3"):
        cfg = compose(
            config, [*overrides, f"paths.output_dir={output_dir}"], return_hydra_config=True
        )
    HydraConfig().set_config(cfg)
    return cfg


@pytest.mark.parametrize("line", EXAMPLES, ids=[e.partition(" #")[0].strip() for e in EXAMPLES])
def test_readme_example_runs(line, filled, tmp_path, tiny_data, monkeypatch, capsys) -> None:
    comment = line.partition(" #")[2].strip()
    if comment.startswith("needs "):
        pytest.skip(f"README: {comment}")
    command, *args = shlex.split(line, comments=True)
    args = [filled(a) for a in args]
    monkeypatch.chdir(tmp_path)  # what a command writes (lenet.onnx, outputs/) lands here
    refused = re.search(r"exit code (\d+)", comment)
    if refused:
        result = run_cli(*args, cwd=tmp_path, data=tiny_data, command=command)
        assert result.returncode == int(refused.group(1)), result.stderr[-2000:]
        assert "Fix:" in result.stdout + result.stderr and not run_folders(tmp_path)
    elif command == "lenet-train" and "-m" in args:
        check_sweep(args, tmp_path, tiny_data)
    elif command == "lenet-train" and "--cfg" in args:
        result = run_cli(*args, cwd=tmp_path, data=tiny_data)
        assert result.returncode == 0, result.stderr[-2000:]
        printed = yaml.safe_load(result.stdout)
        for group, option in (a.split("=", 1) for a in args if "=" in a and "." not in a):
            assert printed[group]["name"] == option
        assert not run_folders(tmp_path)
    elif command in ("lenet-train", "lenet-eval"):
        check_single_run(command, args, tmp_path, tiny_data)
    else:
        check_plain_command(command, args, tmp_path, capsys)


def check_single_run(command: str, args: list[str], tmp_path: Path, data: Path) -> None:
    from lenet_cli.cli.eval import evaluate
    from lenet_cli.cli.train import train

    out = tmp_path / "run"
    config, run = ("train", train) if command == "lenet-train" else ("eval", evaluate)
    run(compose(config, [*args, f"data.root={data}", *FAST], out))
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test/acc"] <= 1 and metrics["test/loss"] > 0
    if command == "lenet-train":
        assert metrics["epochs"] == 1 and (out / "checkpoints" / "best.ckpt").is_file()
    else:
        assert (out / "confusion_matrix.png").is_file()


def check_sweep(args: list[str], tmp_path: Path, data: Path) -> None:
    result = run_cli(*args, *FAST, cwd=tmp_path, data=data)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    with open(sweep / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # One job per combination of the comma-separated values of the line.
    jobs = math.prod(len(a.split("=", 1)[1].split(",")) for a in args if "," in a)
    assert len(rows) == jobs and {row["status"] for row in rows} == {"ok"}


def check_plain_command(command: str, args: list[str], tmp_path: Path, capsys) -> None:
    """lenet-predict, lenet-export and lenet-inspect, called as their console scripts are."""
    if command == "lenet-predict":
        from lenet_cli.cli.predict import main

        main(args)
        printed = capsys.readouterr().out
        if "--json" in args:
            predictions = json.loads(printed)
            assert len(predictions) == PHOTOS
            assert all(0 <= p["label"] <= 9 for p in predictions)
            assert all(np.isclose(sum(p["probabilities"]), 1, atol=1e-4) for p in predictions)
    elif command == "lenet-export":
        from lenet_cli.cli.export import main

        main(args)
        output = tmp_path / args[args.index("--output") + 1]
        assert output.stat().st_size > 0 and "lenet-export: done" in capsys.readouterr().out
    else:
        from lenet_cli.cli.inspect_model import run

        run(args)
        printed = capsys.readouterr().out
        assert "total" in printed and "MACs" in printed
