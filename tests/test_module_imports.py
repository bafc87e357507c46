"""The package's modules import one way: the checks read the import statements (ast), nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "medvlthinker"


def module_path(name: str) -> Path:
    path = PACKAGE.parent / Path(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported(name: str, *, in_functions: bool) -> set[str]:
    """The medvlthinker modules ``name`` imports: at module level (``TYPE_CHECKING`` blocks included), or anywhere."""
    tree = ast.parse(module_path(name).read_text(encoding="utf-8"))
    nodes = list(ast.walk(tree)) if in_functions else [
        n for top in tree.body for n in ([top] if not isinstance(top, ast.If) else top.body)]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {m for m in found if m.startswith("medvlthinker.") and module_path(m).exists()}


def test_the_runner_and_the_ray_pool_build_engines_without_importing_each_other():
    runner, pool = "medvlthinker.inference.runner", "medvlthinker.inference.ray_pool"
    assert pool not in imported(runner, in_functions=False)
    assert runner not in imported(pool, in_functions=True)
    assert "medvlthinker.inference.engines" in imported(pool, in_functions=False) & imported(runner, in_functions=False)


def test_the_analysis_modules_import_without_a_cycle():
    modules = {f"medvlthinker.analysis.{p.stem}" for p in (PACKAGE / "analysis").glob("*.py") if p.stem != "__init__"}
    graph = {m: imported(m, in_functions=False) & modules for m in modules}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join(path[path.index(module):] + (module,))
        if module in done:
            return
        for dependency in sorted(graph[module]):
            visit(dependency, path + (module,))
        done.add(module)

    for module in sorted(modules):
        visit(module, ())


def test_the_analysis_and_inference_modules_re_export_nothing():
    """A name is imported from the module that defines it (outside a package's ``__init__``): a second home would
    keep stale imports working and hide where the name lives."""
    found = [f"{path.relative_to(PACKAGE.parent)}:{number}"
             for folder in ("analysis", "inference") for path in sorted((PACKAGE / folder).glob("*.py"))
             if path.name != "__init__.py"
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
             if "noqa: F401" in line]
    assert found == []
