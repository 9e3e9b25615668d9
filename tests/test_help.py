"""`--help` of the Hydra commands: usage, every config group, the config the overrides compose."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, run_cli


def hydra_app_groups() -> dict[str, list[str]]:
    """The groups and options Hydra itself finds (its own hydra/* groups aside)."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_module(config_module="lenet_cli.conf", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        groups = {}

        def walk(parent: str) -> None:
            for group in loader.list_groups(parent):
                name = f"{parent}/{group}" if parent else group
                if name.startswith("hydra"):
                    continue
                options = loader.get_group_options(name)
                if options:
                    groups[name] = sorted(options)
                walk(name)

        walk("")
        return groups


def test_help_lists_what_hydra_finds_and_the_composed_config(tmp_path: Path) -> None:
    result = run_cli("model=modern", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("lenet-train: Train a LeNet-family network")
    listed = out.split("== Configuration groups ==")[1].split("== Config ==")[0].splitlines()
    groups = [line for line in listed if line and not line.startswith((" ", "Compose"))]
    expected = [f"{group}: {', '.join(options)}" for group, options in hydra_app_groups().items()]
    assert sorted(groups) == sorted(expected)  # every group Hydra finds, its options, no other
    assert "name: modern" in out and "activation: relu" in out  # the overrides were composed
    assert "\nhydra:" not in out.split("== Config ==")[1]  # Hydra's own section is left out
    assert not (tmp_path / "outputs").exists()  # --help runs nothing and makes no folder


def test_help_resolves_interpolations_when_asked(tmp_path: Path) -> None:
    plain = run_cli("--help", cwd=tmp_path)
    resolved = run_cli("--help", "--resolve", cwd=tmp_path)
    assert plain.returncode == 0 and resolved.returncode == 0, resolved.stderr
    assert "in_channels: ${data.channels}" in plain.stdout
    assert "in_channels: 1" in resolved.stdout and "${" not in resolved.stdout
    assert "output_dir: outputs/<date>/<time>" in resolved.stdout


def test_help_shows_one_run_of_a_sweep_and_the_config_of_a_resumed_run(tmp_path: Path) -> None:
    sweep = run_cli("--help", "-m", "optimizer.lr=0.01,0.003", "model=classic,modern", cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr
    assert "lr: 0.01\n" in sweep.stdout and "name: classic" in sweep.stdout  # the first job
    run = tmp_path / "outputs" / "2026-01-01" / "10-00-00"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").touch()
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("- model=modern\n- trainer.max_epochs=4\n")
    resumed = run_cli(f"resume={run}", "--help", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "name: modern" in resumed.stdout and "max_epochs: 4" in resumed.stdout
    assert f"ckpt_path: {run / 'checkpoints' / 'last.ckpt'}" in resumed.stdout


def test_help_with_a_misspelt_option_says_so_briefly(tmp_path: Path) -> None:
    result = run_cli("model=moden", "--help", cwd=tmp_path)
    assert result.returncode == 2
    assert "model=moden is not a known model option" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    bad_value = run_cli("optimizer.fused=maybe", "--help", cwd=tmp_path)  # checked like a run
    assert bad_value.returncode == 2 and "optimizer.fused is 'maybe'" in bad_value.stderr


def test_eval_help_has_its_own_usage(tmp_path: Path) -> None:
    result = run_cli("--help", cwd=tmp_path, command="lenet-eval")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("lenet-eval: Test a checkpoint")
    assert "Usage: lenet-eval ckpt_path=FILE" in result.stdout
    assert "mistakes: 24" in result.stdout
    groups = result.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert "\ntrainer: " in groups and "\nmodel: " not in groups  # only groups lenet-eval composes


@pytest.mark.parametrize("order", ["flags first", "overrides first"])
def test_cfg_job_prints_the_config_wherever_the_overrides_stand(tmp_path: Path, order: str) -> None:
    overrides, flag = ["experiment=fast", "trainer.max_epochs=3"], ["--cfg", "job"]
    args = [*flag, *overrides] if order == "flags first" else [*overrides, *flag]
    result = run_cli(*args, cwd=tmp_path, data=tmp_path / "no-data-here")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "max_epochs: 3" in result.stdout and "channels_last: true" in result.stdout
    assert not (tmp_path / "outputs").exists()  # printed, nothing run


def test_help_says_what_optimizer_lr_means_under_each_schedule(tmp_path: Path) -> None:
    from lenet_cli.cli.help import help_text

    text = " ".join(help_text("train", []).split())
    assert "optimizer.lr is the peak under onecycle" in text
    assert "the starting value under cosine and step" in text
    for name in ("onecycle", "cosine", "step"):
        comment = (REPO / "conf" / "scheduler" / f"{name}.yaml").read_text()
        assert "optimizer.lr is the" in comment
