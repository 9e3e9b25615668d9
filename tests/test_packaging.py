"""A plain (non-editable) install carries conf/ inside the package: lenet-train works anywhere."""

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
    build = pip + ["wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)]
    subprocess.run(build, check=True, capture_output=True)
    (wheel,) = wheels.glob("lenet_cli-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for config in ("train.yaml", "eval.yaml", "model/classic.yaml", "data/mnist.yaml"):
        assert f"lenet_cli/conf/{config}" in names
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
