"""Each Docker image carries what its roles run and nothing more ([tool.ticslab.images] in
pyproject.toml, and the extras [tool.ticslab.image-extras] gives an image whole, which the
Dockerfile installs from).

The services image runs ``ticslab taskserver``, ``balancer`` and ``client``; the dashboard image
runs ``ticslab dashboard``. From each command's ``cli`` module, the project's own imports are
followed (imports inside functions included, ``if TYPE_CHECKING:`` blocks not); every other
import must be the standard library or a distribution the image installs, and every
distribution the image installs must be imported. No Docker engine is needed.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
IMAGES: dict[str, list[str]] = PYPROJECT["tool"]["ticslab"]["images"]
# Extras an image installs whole (the Dockerfile); one not declared (yet) installs nothing.
IMAGE_EXTRAS: dict[str, list[str]] = PYPROJECT["tool"]["ticslab"].get("image-extras", {})
OPTIONAL: dict[str, list[str]] = PYPROJECT["project"].get("optional-dependencies", {})
OWN = {"services", "dashboard"}
ROLES = {
    "services": [
        "services.cli",
        "services.taskserver.cli",
        "services.balancer.cli",
        "services.client.cli",
    ],
    "dashboard": ["services.cli", "dashboard.cli"],
}
# services.common imports uvicorn only inside log_config(), which no dashboard calls. (The
# task server's psycopg, imported only for --storage postgresql://..., is in the services image
# through its extra `postgres`: [tool.ticslab.image-extras].)
NEVER_CALLED = {"dashboard": {"uvicorn"}}
# Imported by a dependency that does not require it: httpcore (httpx's) imports sniffio on
# every request and searches sys.path for it each time it is missing; uvicorn runs on uvloop
# when it is there (pyproject.toml).
SOUGHT_BY = {"sniffio": "httpx", "uvloop": "uvicorn"}


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return normal(match.group())


def module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_names(name: str, path: Path) -> set[str]:
    """Every module ``path`` (module ``name``) may import, as absolute dotted names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    class Imports(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
                for child in node.orelse:
                    self.visit(child)
                return
            if ast.unparse(test).startswith("sys.version_info"):  # only this Python's branch
                code = compile(ast.Expression(test), str(path), "eval")
                for child in node.body if eval(code, {"sys": sys}) else node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # maybe submodules

    Imports().visit(ast.parse(path.read_text()))
    return found


def third_party_imports(entry_points: list[str]) -> set[str]:
    """Top-level names of the non-stdlib, non-project modules reachable from ``entry_points``."""
    seen: set[str] = set()
    outside: set[str] = set()
    todo = list(entry_points)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        top = name.split(".")[0]
        if top not in OWN:
            if top not in sys.stdlib_module_names and top != "__future__":
                outside.add(top)
            continue
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        path = module_file(name)
        if path is not None:  # else a name imported from a module, not a module
            todo.extend(imported_names(name, path))
    return outside


def distributions(top_level_names: set[str]) -> set[str]:
    owners = packages_distributions()
    found = set()
    for name in top_level_names:
        assert name in owners, f"no installed distribution provides the module {name!r}"
        found.update(normal(owner) for owner in owners[name])
    return found


def installed(image: str) -> set[str]:
    """What the Dockerfile installs for ``image``: the names it lists, and every requirement
    of the extras it takes whole."""
    extras = IMAGE_EXTRAS.get(image, [])
    return {normal(n) for n in IMAGES[image]} | {
        requirement_name(r) for extra in extras for r in OPTIONAL.get(extra, [])
    }


def test_every_image_names_only_declared_dependencies() -> None:
    declared = {requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    for image, names in IMAGES.items():
        assert {normal(n) for n in names} <= declared, image


@pytest.mark.parametrize("image", sorted(ROLES))
def test_an_image_installs_exactly_what_its_roles_import(image: str) -> None:
    needed = distributions(third_party_imports(ROLES[image]))
    needed -= NEVER_CALLED.get(image, set())
    needed |= {name for name, by in SOUGHT_BY.items() if by in needed}
    assert installed(image) == needed


def test_the_services_image_leaves_out_the_dashboard_and_the_tools() -> None:
    services = {normal(n) for n in IMAGES["services"]}
    assert not services & {"textual", "textual-dev", "psutil"}
    assert "textual-dev" not in {normal(n) for n in IMAGES["dashboard"]}


def test_only_the_services_image_takes_the_postgres_extra() -> None:
    """Its task servers store tasks in PostgreSQL under docker-compose.postgres.yml; the
    dashboard never talks to a database."""
    assert IMAGE_EXTRAS == {"services": ["postgres"]}
    assert set(IMAGE_EXTRAS) <= set(IMAGES)
