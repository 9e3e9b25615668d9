"""A plain install carries conf/ inside the package (lenet-train works anywhere); the editable
install of `make install` reads conf/ itself and prints no build warning."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO


def test_wheel_ships_the_configs_and_runs_from_another_folder(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip"]
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    # pip fetches the build backend (hatchling) into an isolated build environment
    built = subprocess.run(
        pip + ["wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
        text=True,
    )
    # the backend's own warnings; pip's "WARNING:" lines are about the machine's index settings
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


def test_editable_install_is_quiet_and_reads_conf_in_place(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    editable = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps"]
    installed = subprocess.run(
        editable + ["-e", str(REPO)], check=True, capture_output=True, text=True
    )
    # what `make install` shows of the build (setuptools printed "BuildBackendWarning: Editable
    # installation" for this flat layout)
    assert "Warning" not in installed.stderr, installed.stderr[-2000:]
    code = "from importlib.resources import files; print(files('lenet_cli.conf') / 'train.yaml')"
    where = subprocess.run([python, "-c", code], cwd=tmp_path, check=True, capture_output=True)
    # the repository's own conf/ (through the lenet_cli/conf link), not a copy
    assert Path(where.stdout.decode().strip()).resolve() == REPO / "conf" / "train.yaml"
