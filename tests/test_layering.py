"""The package graph is the DAG of ARCHITECTURE.md: solvers → data → models → evaluation → training → entry points.

Every import counts, including those inside functions: a lazy import still ties two files together.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["solvers", "data", "models", "evaluation", "training"]
# What each layer may import from the project (besides itself).
ALLOWED = {
    "solvers": set(),
    "data": {"solvers"},
    "models": set(),  # networks are pure torch: no data, no evaluation, no training
    "evaluation": {"solvers", "data", "models"},
    "training": {"solvers", "data", "models", "evaluation"},
    "train": {"solvers", "data", "models", "evaluation", "training"},
    "evaluate": {"solvers", "data", "models", "evaluation", "training"},
}
# Layers that must not depend on Lightning or Hydra (pure torch / numerical code).
PURE = {"solvers", "models", "evaluation"}


def project_files() -> dict[str, Path]:
    """Dotted module name → file, for every project module."""
    files = {"train": ROOT / "train.py", "evaluate": ROOT / "evaluate.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):  # subpackages too (evaluation/report/…)
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every module ``path`` imports: project modules resolved to their file, others by top-level name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            found.add(name)
    return found


GRAPH = {name: imports_of(path, set(project_files())) for name, path in project_files().items()}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_follow_the_layers(module):
    layer = module.split(".")[0]
    project = {dep for dep in GRAPH[module] if dep.split(".")[0] in ALLOWED}
    wrong = sorted(dep for dep in project if dep.split(".")[0] not in ALLOWED[layer] | {layer})
    assert not wrong, f"{module} imports {wrong} against the layering {ALLOWED[layer] | {layer}}"
    if layer in PURE:
        frameworks = sorted(dep for dep in GRAPH[module] if dep.split(".")[0] in {"lightning", "hydra"})
        assert not frameworks, f"{module} is pure numerical code but imports {frameworks}"


def test_no_import_cycles_between_files():
    # A package's __init__ re-exports its files: a file importing a package it lies in is the one cycle
    # allowed.
    project = {
        name: {dep for dep in deps if dep in GRAPH and dep != name and not name.startswith(f"{dep}.")}
        for name, deps in GRAPH.items()
    }
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(project[node]):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep] if dep in path else [node, dep]
                pytest.fail(f"import cycle: {' → '.join(cycle)}")
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for name in sorted(project):
        if name not in state:
            visit(name, [name])


def test_subpackage_files_are_checked():
    files = project_files()
    assert "evaluation.report" in files and "evaluation.report.tables" in files
    assert "evaluation.report.tables" in GRAPH["evaluation.report"]


def test_the_checker_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "net.py"
    bad.write_text(
        "def f():\n    from training.module import SurrogateModule\n    import lightning.pytorch\n"
    )
    found = imports_of(bad, set(project_files()))
    assert {"training.module", "lightning"} <= found
