"""The code's shape: no module of ours imports, even only for type checking, a module that
imports it back (directly or through others), so each can be read and tested alone; and no
module loads a heavier framework than its layer allows (``LAYERS``), counting the
``__init__`` of every package Python runs on the way."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("services", "dashboard")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Our modules that ``path`` imports: ``from a.b import c`` is a.b.c when that is a
    module, else a.b. (A package's ``__init__`` runs before any of its modules; that order is
    Python's, not a dependency of ours, so it is not counted.)"""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return found & known


def import_graph() -> dict[str, set[str]]:
    paths = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    known = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, known) - {module_name(p)} for p in paths}


def a_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for imported in sorted(graph[module]):
            if cycle := visit(imported, [*path, module]):
                return cycle
        done.add(module)
        return None

    for module in sorted(graph):
        if cycle := visit(module, []):
            return cycle
    return None


def test_no_module_imports_itself_back() -> None:
    cycle = a_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


# The frameworks that make a process heavy (Textual alone takes 0.6 s to import), by the
# top-level module that brings each: textual_serve and textual_plotext are Textual's.
FRAMEWORKS = {
    "textual": "textual",
    "textual_serve": "textual",
    "textual_plotext": "textual",
    "textual_dev": "textual",
    "starlette": "starlette",
    "uvicorn": "uvicorn",
    "aiohttp": "aiohttp",
}
NO_FRAMEWORK: frozenset[str] = frozenset()
STARLETTE = frozenset({"starlette"})
NO_TEXTUAL = frozenset({"starlette", "uvicorn", "aiohttp"})
# What each module may load, at its import. The shared modules load no framework (so the
# dashboard and the client carry no Starlette); what needs Starlette is in services/web.py;
# the dashboard's parts that draw nothing load no Textual (they run in tests and the web
# server's workers without it).
LAYERS: dict[str, frozenset[str]] = {
    "services.common": NO_FRAMEWORK,
    "services.lang": NO_FRAMEWORK,
    "services.errors": NO_FRAMEWORK,
    "services.stopping": NO_FRAMEWORK,
    "services.web": STARLETTE,
    "services.launcher.cli": NO_TEXTUAL,
    "dashboard.history": NO_TEXTUAL,
    "dashboard.format": NO_TEXTUAL,
    "dashboard.options": NO_TEXTUAL,
    "dashboard.api": NO_TEXTUAL,
    "dashboard.poll": NO_TEXTUAL,
}
# Commands whose every run stays in a layer: their imports inside functions count too.
# ``ticslab experiment`` starts stacks and measures them; it never opens the dashboard.
COMMANDS: dict[str, frozenset[str]] = {"services.experiment.cli": NO_TEXTUAL}


def imports_at_load(tree: ast.Module, lazily: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements Python runs when the module loads (``lazily``: those in its
    functions too); an ``if TYPE_CHECKING:`` block never runs."""
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            todo.extend(node.orelse)
        elif lazily or not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            todo.extend(ast.iter_child_nodes(node))


def frameworks_loaded(
    entry: str, known: set[str], lazily: bool, root: Path = ROOT
) -> dict[str, list[str]]:
    """Each framework importing ``entry`` loads, with the chain of our modules that brings it
    (a package's ``__init__`` included: Python runs it before any module inside)."""
    found: dict[str, list[str]] = {}
    chains: dict[str, list[str]] = {entry: [entry]}
    todo = [entry]
    while todo:
        module = todo.pop()
        parts = module.split(".")
        names = {".".join(parts[:i]) for i in range(1, len(parts))}  # the __init__ chain
        path = root.joinpath(*parts)
        file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        for node in imports_at_load(ast.parse(file.read_text()), lazily):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        for name in sorted(names):
            top = name.split(".")[0]
            if top in FRAMEWORKS:
                found.setdefault(FRAMEWORKS[top], [*chains[module], name])
            elif name in known and name not in chains:
                chains[name] = [*chains[module], name]
                todo.append(name)
    return found


def too_heavy(layers: dict[str, frozenset[str]], lazily: bool) -> list[str]:
    known = set(import_graph())
    problems = []
    for module, allowed in layers.items():
        for framework, chain in frameworks_loaded(module, known, lazily).items():
            if framework not in allowed:
                problems.append(f"{module} loads {framework}: {' -> '.join(chain)}")
    return problems


def test_no_module_loads_a_framework_above_its_layer() -> None:
    assert too_heavy(LAYERS, lazily=False) == []


def test_no_command_ever_loads_a_framework_above_its_layer() -> None:
    assert too_heavy(COMMANDS, lazily=True) == []


def test_the_walk_counts_a_package_init_and_an_import_inside_a_function(tmp_path: Path) -> None:
    """The two ways Textual once reached modules that need none: dashboard/__init__.py
    imported the app, and ``ticslab experiment``'s run() imported launcher/demo.py."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from textual.app import App\n")
    (package / "light.py").write_text("import json\n")
    (tmp_path / "cmd.py").write_text("def run() -> None:\n    import aiohttp\n")
    known = {"pkg", "pkg.light", "cmd"}
    assert frameworks_loaded("pkg.light", known, lazily=False, root=tmp_path) == {
        "textual": ["pkg.light", "pkg", "textual.app"]
    }
    assert frameworks_loaded("cmd", known, lazily=False, root=tmp_path) == {}
    assert frameworks_loaded("cmd", known, lazily=True, root=tmp_path) == {
        "aiohttp": ["cmd", "aiohttp"]
    }


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(LAYERS))
def test_a_real_import_loads_no_framework_above_its_layer(module: str) -> None:
    """The same as the walk, by importing the module in a fresh interpreter."""
    check = (
        f"import sys, {module}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=60
    ).stdout.split()
    heavy = {FRAMEWORKS[top] for top in loaded if top in FRAMEWORKS}
    assert heavy <= LAYERS[module], module


def where_used(names: set[str]) -> dict[str, set[str]]:
    """For each name, our modules that call it or write it as a string (``"bad_token"``)."""
    found: dict[str, set[str]] = {name: set() for name in names}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in names:
                    found[node.value].add(module_name(path))
                elif isinstance(node, ast.Attribute | ast.Name):
                    name = node.attr if isinstance(node, ast.Attribute) else node.id
                    if name in names:
                        found[name].add(module_name(path))
    return found


def test_one_token_guard_and_one_body_reader() -> None:
    """The 401 of every token-protected route (task server /admin, balancer /control, the
    supervisor) and the reading of a bounded request body each live in services/web.py only;
    the sentence of ``bad_token`` is services/errors.py's."""
    used = where_used({"compare_digest", "bad_token"})
    assert used["compare_digest"] == {"services.web"}
    assert used["bad_token"] == {"services.web", "services.errors"}
    readers = {
        module_name(path)
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "request.stream()" in path.read_text()
    }
    assert readers == {"services.web"}
