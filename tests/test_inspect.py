"""lenet-inspect: per-layer table, JSON, side-by-side comparison and refused geometry."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import run_cli

PAPER_PARAMS = {"C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48120, "F6": 10164}


def inspect(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """lenet-inspect as a user runs it (a new process: a few seconds, mostly importing torch)."""
    return run_cli(*args, cwd=cwd, env=env, command="lenet-inspect", timeout=120)


def inspect_here(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    """The same entry point in this process (fast): exit code, stdout, stderr as one line."""
    from lenet_cli.cli.inspect_model import main

    monkeypatch.setattr(sys, "argv", ["lenet-inspect", *args])
    code = 0
    try:
        main()
    except SystemExit as exit:
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, " ".join(re.sub("[│╭╮╰╯─]", " ", err).split())  # panel text, unwrapped


def test_classic_table_shows_the_papers_parameter_counts(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = inspect_here(capsys, monkeypatch, "model=classic")
    assert code == 0, err
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│┃").split("│")]
        if len(cells) == 7:
            rows[cells[0]] = cells
    for layer, params in PAPER_PARAMS.items():
        assert rows[layer][3] == f"{params:,}", rows.get(layer)
    assert rows["C3"][2] == "16x10x10" and rows["C3"][5:] == ["14", "2"]  # receptive field, jump
    assert re.search(r"total .* 60,850 .* 328,096", out)
    assert not list(tmp_path.iterdir())  # inspecting leaves no run folder behind


def legend_under_table(out: str) -> dict[str, str]:
    """The lines printed after the table's bottom border, by their first word."""
    lines = out.rstrip().splitlines()
    bottom = max(i for i, line in enumerate(lines) if line.startswith("└"))
    return {line.split()[0]: line.rstrip() for line in lines[bottom + 1 :]}


def test_legend_under_the_table_explains_rf_and_jump_in_80_columns(tmp_path: Path) -> None:
    result = inspect("model=classic", cwd=tmp_path, env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    legend = legend_under_table(result.stdout)
    assert list(legend) == ["RF", "jump", "shape", "MACs"]  # one line each: nothing wrapped
    assert "receptive field" in legend["RF"] and "input pixels" in legend["RF"]
    assert "all:" in legend["RF"]  # what the "all" of the fully connected rows means
    assert "neighbouring units" in legend["jump"] and "input pixels" in legend["jump"]
    assert "multiply" in legend["MACs"] and "params" in legend["shape"]
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_compare_has_the_legend_too(capsys, monkeypatch) -> None:
    code, out, err = inspect_here(capsys, monkeypatch, "--compare", "model=classic,mlp")
    assert code == 0, err
    legend = legend_under_table(out)
    assert "receptive field" in legend["RF"] and "input pixels" in legend["jump"]
    assert "last convolution" in legend["last"]  # whose RF and jump the table shows


def test_json_has_every_layer_and_consistent_totals(capsys, monkeypatch) -> None:
    code, out, err = inspect_here(capsys, monkeypatch, "--json", "model=classic")
    assert code == 0, err
    data = json.loads(out)
    layers = {row["name"]: row for row in data["layers"]}
    assert {name: layers[name]["params"] for name in PAPER_PARAMS} == PAPER_PARAMS
    assert data["total"]["params"] == sum(row["params"] for row in data["layers"]) == 60850
    assert data["total"]["macs"] == sum(row["macs"] for row in data["layers"])
    assert layers["C1"]["macs"] == 28 * 28 * 6 * 25  # one 5x5 kernel per output pixel and map
    assert (layers["S4"]["receptive_field"], layers["S4"]["jump"]) == (16, 4)
    assert data["last_conv"] == "C3"


def test_overrides_behave_as_in_lenet_train(capsys, monkeypatch) -> None:
    args = ("inspect.format=json", "model=modern", "model.kernel_size=3", "model.padding=same")
    code, out, err = inspect_here(capsys, monkeypatch, *args)
    assert code == 0, err
    layers = {row["name"]: row for row in json.loads(out)["layers"]}
    assert layers["C1"]["params"] == 6 * (3 * 3 + 1)
    assert layers["C1"]["shape"] == [6, 32, 32]  # 'same' keeps the padded 32x32 field
    assert layers["C3"]["params"] == 16 * (6 * 9 + 1)  # modern: full C3


def test_compare_puts_variants_side_by_side(capsys, monkeypatch) -> None:
    code, out, err = inspect_here(capsys, monkeypatch, "--compare", "model=classic,modern,mlp")
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.count("│") > 3]
    lines = {line.split("│")[1].strip(): line for line in rows}
    assert (
        "60,850" in lines["classic"] and "61,706" in lines["modern"] and "669,706" in lines["mlp"]
    )
    assert "C3" in lines["classic"] and "none" in lines["mlp"]

    args = ("--json", "--compare", "model.kernel_size=3,5", "model=modern")
    code, out, err = inspect_here(capsys, monkeypatch, *args)
    assert code == 0, err
    data = json.loads(out)
    assert [v["variant"] for v in data] == ["model.kernel_size=3", "model.kernel_size=5"]
    assert data[1]["total"]["params"] == 61706
    assert [v["layers"][3]["receptive_field"] for v in data] == [8, 14]  # C3 sees more with 5x5


def test_compare_lenet_1_4_and_5_shows_the_hand_computed_totals(capsys, monkeypatch) -> None:
    code, out, err = inspect_here(capsys, monkeypatch, "--compare", "model=lenet1,lenet4,classic")
    assert code == 0, err
    rows = {
        cells[0]: cells[1:]
        for line in out.splitlines()
        if (cells := [c.strip() for c in line.strip("│").split("│")])[0]
        in ("lenet1", "lenet4", "classic")
    }
    assert rows == {  # params, MACs, last conv, its RF, its jump
        "lenet1": ["2,578", "92,288", "C3", "14", "2"],
        "lenet4": ["52,698", "449,568", "C3", "14", "2"],
        "classic": ["60,850", "328,096", "C3", "14", "2"],
    }
    code, out, err = inspect_here(capsys, monkeypatch, "--json", "model=lenet4")
    assert code == 0, err
    layers = {row["name"]: row for row in json.loads(out)["layers"]}
    assert layers["S2"]["shape"] == [8, 14, 14] and layers["S2"]["params"] == 16
    assert "2 per map" in layers["S2"]["kind"]
    assert layers["C3"]["macs"] == 10 * 10 * 16 * 8 * 25  # C3 reads all 8 S2 maps
    rf = {name: (row["receptive_field"], row["jump"]) for name, row in layers.items()}
    assert rf == {"input": (1, 1), "C1": (5, 1), "S2": (6, 2), "C3": (14, 2), "S4": (16, 4),
                  "C5": (None, None), "output": (None, None)}  # fmt: skip


def test_impossible_geometry_exits_2_with_the_shape_trace(capsys, monkeypatch) -> None:
    args = ("model=modern", "model.kernel_size=15", "model.padding=0")
    code, _, err = inspect_here(capsys, monkeypatch, *args)
    assert code == 2
    assert "Shape trace" in err and "C3" in err
    assert "model.kernel_size" in err and "Traceback" not in err


def test_bad_overrides_exit_2_with_the_fix(capsys, monkeypatch) -> None:
    for args, expected in (
        (["model.kernl_size=3"], "Did you mean model.kernel_size"),
        (["model=lenet7"], "Available model options"),
        (["model.activation=relu6"], "allowed: one of relu"),
        (["inspect.format=xml"], "inspect.format=table or json"),
        (["--compare", "model=classic,nope"], "model=nope is not a known model option"),
    ):
        code, _, err = inspect_here(capsys, monkeypatch, *args)
        assert code == 2, (args, err)
        assert expected in err


def test_inspect_never_loads_lightning() -> None:
    # Lightning takes seconds to import; inspecting must not pay for it.
    code = (
        "import sys; from lenet_cli.cli.inspect_model import run; run(['--json']); "
        "assert 'pytorch_lightning' not in sys.modules, 'lightning imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
