"""docs/design/README.md's map stays true: every file it names exists, and every name it
says a file holds is in that file.

The map is how a newcomer finds their way; a row that points at a moved file sends them
nowhere, so a move that forgets the map fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAP = ROOT / "docs" / "design" / "README.md"
# A file in backticks, optionally followed by the names it holds: `balancer/app.py` (`lifespan`)
NAMED_FILE = re.compile(r"`([\w./-]+\.(?:py|tcss|md|toml|yml))`(?:\s*\(([^)]*)\))?")
# "`NAME` in `file`": a name the map says lives in a file.
NAME_IN_FILE = re.compile(r"`(\w+)` in `([\w./-]+\.(?:py|tcss))`")
LINK = re.compile(r"\]\(([^)#]+)(?:#[^)]*)?\)")
FOLDER = re.compile(r"`((?:services|dashboard)/[\w/]*/|[\w]+/)`")
BACKTICKED = re.compile(r"`(\w+)`")


def resolve(name: str) -> Path:
    """The map says "services/ unless said": a bare path is under services/."""
    for base in (ROOT, ROOT / "services"):
        if (base / name).exists():
            return base / name
    return ROOT / "services" / name


def named_files() -> list[tuple[str, list[str]]]:
    text = MAP.read_text(encoding="utf-8")
    found = [(path, BACKTICKED.findall(names or "")) for path, names in NAMED_FILE.findall(text)]
    found += [(path, [name]) for name, path in NAME_IN_FILE.findall(text)]
    return found


def test_the_map_names_files() -> None:
    """A parser that found nothing would make the other tests pass by accident."""
    assert len(named_files()) > 40
    assert any(names for _, names in named_files())


@pytest.mark.parametrize(("path", "names"), named_files())
def test_every_file_the_map_names_exists_and_holds_its_names(path: str, names: list[str]) -> None:
    file = resolve(path)
    assert file.is_file(), f"docs/design/README.md names {path}, which does not exist"
    text = file.read_text(encoding="utf-8")
    for name in names:
        assert re.search(rf"\b{re.escape(name)}\b", text), f"{path} holds no {name!r}"


def test_every_folder_and_link_the_map_names_exists() -> None:
    text = MAP.read_text(encoding="utf-8")
    for folder in FOLDER.findall(text):
        assert resolve(folder).is_dir(), f"docs/design/README.md names {folder}, not a folder"
    for link in LINK.findall(text):
        assert (MAP.parent / link).exists(), f"docs/design/README.md links to {link}"
