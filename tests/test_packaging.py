"""A plain (non-editable) install carries conf/ inside the package: lenet-train works anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO


def test_wheel_ships_the_configs_and_runs_from_another_folder(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip"]
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    # Built from a copy: a build in the tree leaves build/lib behind, whose stale modules (files
    # deleted since) setuptools would put in the next wheel.
    tree = tmp_path / "tree"
    for folder in ("conf", "lenet_cli", "hydra_plugins"):
        shutil.copytree(REPO / folder, tree / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / file, tree / file)
    build = pip + ["wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(tree)]
    built = subprocess.run(build, check=True, capture_output=True, text=True)
    # setuptools' own warnings (licence format, config folders absent from `packages`); pip's
    # "WARNING:" lines are about the machine's index settings, not the project
    assert "Warning" not in built.stderr, built.stderr[-2000:]
    (wheel,) = wheels.glob("lenet_cli-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {
        f"lenet_cli/conf/{p.relative_to(REPO / 'conf')}" for p in REPO.glob("conf/**/*.yaml")
    }
    assert configs <= names and "lenet_cli/conf/model/classic.yaml" in configs
    # the tree's modules, no more, no fewer: the packages listed in pyproject.toml keep up with it
    modules = {
        str(p.relative_to(REPO))
        for d in ("lenet_cli", "hydra_plugins")
        for p in (REPO / d).rglob("*.py")
    }
    assert "lenet_cli/cli/train.py" in modules
    assert {n for n in names if n.endswith(".py")} == modules | {"lenet_cli/conf/__init__.py"}
    install = pip + ["install", "-q", "--no-deps", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def installed_lenet_train(*args: str) -> subprocess.CompletedProcess:
        """lenet-train from the installed wheel, run in a folder far from the repository."""
        code = (
            "import sys, lenet_cli, lenet_cli.cli.train as t; "
            "assert lenet_cli.__file__.startswith(sys.argv[1]), lenet_cli.__file__; "
            "sys.argv = ['lenet-train', *sys.argv[2:]]; t.main()"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, str(site), *args],
            cwd=elsewhere,
            env={**os.environ, "PYTHONPATH": str(site)},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return result

    result = installed_lenet_train("--cfg", "job", "model=classic")
    assert "name: classic" in result.stdout and "c3_table: lecun" in result.stdout
    # --help reads the config groups from the installed package's folder
    result = installed_lenet_train("--help")
    assert "model: classic, d2l, lenet1, lenet4, mlp, modern, tutorial" in result.stdout
