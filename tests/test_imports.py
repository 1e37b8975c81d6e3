"""The project's import graph: no cycles, no private names across modules, and the layers' direction.

Every ``import``/``from ... import`` in every module of nero_study, api, workers and dashboards counts, also
those inside functions (a lazy import is still a dependency). A cycle means a missing module underneath; a
``_private`` name imported from another module means a public one is missing.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("nero_study", "api", "workers", "dashboards")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "migrations" not in path.parts  # Alembic's scripts are loaded by Alembic, not imported
    }


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports() -> tuple[dict[str, set[str]], list[str]]:
    """The graph (module -> the project modules it imports), and every ``from x import _name`` across modules."""
    modules = _modules()
    graph: dict[str, set[str]] = {module: set() for module in modules}
    private: list[str] = []

    def project_module(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = project_module(alias.name)
                    if target and target != module:
                        graph[module].add(target)
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, node, path.name == "__init__.py")
                for alias in node.names:
                    # ``from package import module`` imports the submodule; otherwise the name is in ``source``.
                    target = project_module(f"{source}.{alias.name}") or project_module(source)
                    if target is None or target == module:
                        continue
                    graph[module].add(target)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append(f"{module}: from {source} import {alias.name}")
    return graph, private


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        return list(error.args[1])
    return None


def test_the_project_has_no_import_cycle() -> None:
    graph, _ = _imports()
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_no_private_name_is_imported_across_modules() -> None:
    _, private = _imports()
    assert not private, "\n".join(private)


def test_the_library_imports_none_of_the_service_layers_but_the_cli() -> None:
    """nero_study is importable with no server: only its command line reaches api, workers and dashboards."""
    graph, _ = _imports()
    upward = [
        (source, target)
        for source, targets in graph.items()
        for target in targets
        if source.startswith("nero_study") and source != "nero_study.cli" and target.split(".")[0] in PACKAGES[1:]
    ]
    assert not upward, f"nero_study imports a service layer: {upward}"


def test_the_checker_sees_cycles_and_private_imports(tmp_path: Path, monkeypatch) -> None:
    """The walk itself: a made-up package with a lazy-import cycle and a private import is caught."""
    package = tmp_path / "nero_study"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from nero_study.b import thing\n")
    (package / "b.py").write_text("thing = 1\n\ndef later():\n    from nero_study.a import _hidden\n")
    for name in PACKAGES[1:]:
        (tmp_path / name).mkdir()
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    graph, private = _imports()
    assert graph["nero_study.a"] == {"nero_study.b"} and graph["nero_study.b"] == {"nero_study.a"}
    assert set(_cycle(graph) or []) == {"nero_study.a", "nero_study.b"}
    assert private == ["nero_study.b: from nero_study.a import _hidden"]
