"""The package's layout keeps its promises: no import cycles, dependencies point down, and the
modules that must stay light (configs, --help, lenet-inspect) do not load torch or Lightning."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = Path(__file__).resolve().parents[1] / "lenet_cli"
# Lower layers first; a module may import its own layer and the ones below it.
LAYERS = (
    {"lenet_cli.errors", "lenet_cli.files", "lenet_cli.overrides"},
    {"lenet_cli.models"},
    {
        "lenet_cli.config",
        "lenet_cli.console",
        "lenet_cli.checkpoint_io",
        "lenet_cli.devices",
        "lenet_cli.preprocess",
        "lenet_cli.exporters",
        "lenet_cli.cluster",
        "lenet_cli.run_folder",
    },
    {"lenet_cli.training", "lenet_cli.evaluation", "lenet_cli.sweeps"},
    {"lenet_cli.cli"},
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    for level, roots in enumerate(LAYERS):
        if any(module == r or module.startswith(r + ".") for r in roots):
            return level
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def imports(path: Path, top_level_only: bool) -> set[str]:
    """The lenet_cli modules a file imports (`from a import b` counts a.b when it is a module);
    imports under `if TYPE_CHECKING:` never run and do not count."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lenet_cli"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names} & set(MODULES)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lenet_cli")}
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_dependencies_point_down() -> None:
    upward = [
        f"{name} imports {target}"
        for name, path in MODULES.items()
        if name != "lenet_cli"
        for target in imports(path, top_level_only=False)
        if layer(target) > layer(name)
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    # Imports inside functions count: a circle hidden that way is still a circle.
    graph = {
        name: {t for t in imports(path, top_level_only=False) if t in MODULES and t != name}
        for name, path in MODULES.items()
    }
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        assert name not in visiting, " -> ".join([*visiting[visiting.index(name) :], name])
        if name in done:
            return
        visiting.append(name)
        for target in graph[name]:
            visit(target)
        visiting.pop()
        done.add(name)

    for name in graph:
        visit(name)


def test_no_module_shadows_the_standard_library() -> None:
    clashes = {p.stem for p in PACKAGE.rglob("*.py")} & set(sys.stdlib_module_names)
    assert clashes == set()


@pytest.mark.parametrize(
    "module",
    [
        "lenet_cli.config",
        "lenet_cli.models",
        "lenet_cli.models.choices",
        "lenet_cli.cli.train",
        "lenet_cli.cli.eval",
        "lenet_cli.cli.help",
        "lenet_cli.cli.inspect_model",
        "lenet_cli.cli.predict",
        "lenet_cli.cli.export",
        "lenet_cli.sweeps.summary",
    ],
)
def test_light_modules_import_without_torch(module: str) -> None:
    code = (
        f"import sys, {module}; print('torch' in sys.modules, 'pytorch_lightning' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# What runs leave behind, as a user's run in the project folder would write it.
RUN_LEFTOVERS = (
    "outputs/2026-12-03/10-00-00/metrics.json",
    "outputs/2026-12-03/10-00-00/checkpoints/last.ckpt",
    "outputs/multirun/2026-12-03/10-00-00/0_x/tensorboard/events.out.tfevents.1.host",
    "data/MNIST/raw/train-images-idx3-ubyte",
    "MNIST/raw/t10k-labels-idx1-ubyte.gz",
    "hpc_ckpt_1.ckpt",
    "slurm-42.out",
    "study.db",
    "studies/lenet.journal",  # an Optuna study (hydra.sweeper.storage=<file>)
    "lenet.onnx",
    "gpu_bundle/data/MNIST/raw/train-images-idx3-ubyte.gz",
)


def test_git_keeps_data_checkpoints_and_run_outputs_out() -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert [f for f in tracked if f.startswith("outputs/")] == ["outputs/.gitkeep"]
    suffixes = (".ckpt", ".pt", ".onnx", ".db", ".journal", ".gz", "-ubyte")
    assert [f for f in tracked if f.endswith(suffixes) or "tfevents" in f] == []
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *RUN_LEFTOVERS],
        cwd=REPO, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    assert sorted(ignored) == sorted(RUN_LEFTOVERS)
