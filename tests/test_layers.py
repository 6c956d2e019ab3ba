"""Imports flow one way: each package imports only the layers below it (docs/ARCHITECTURE.md).

Function-level imports count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: What each package may import, besides itself.
ALLOWED: dict[str, set[str]] = {
    "quota": set(),
    "schemas": {"quota"},
    "db": {"quota", "schemas"},
    "streams": {"quota", "schemas", "db"},
    "producers": {"quota", "schemas", "db", "streams"},
    "consumers": {"quota", "schemas", "db", "streams"},
    "api": {"quota", "schemas", "db", "streams"},
    "ops": {"quota", "schemas", "db", "streams", "producers", "consumers"},
    "infra": {"quota", "schemas", "db", "streams", "producers", "consumers", "api", "ops"},
}
#: Only the command-line root and the demo assemble the other packages.
ASSEMBLY = {"infra/cli.py", "infra/demo.py"}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found & set(ALLOWED)


def test_every_package_imports_only_the_layers_below_it() -> None:
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if package == "infra" and relative not in ASSEMBLY:
                allowed_here: set[str] = set()
            else:
                allowed_here = allowed
            for imported in imported_packages(path) - {package} - allowed_here:
                wrong.append(f"{relative} imports {imported}")
    assert wrong == []


def test_nothing_imports_the_command_line_root() -> None:
    importers = [
        path.relative_to(REPO).as_posix()
        for package in ALLOWED
        for path in (REPO / package).rglob("*.py")
        if "infra.cli" in path.read_text() and path.name not in ("cli.py", "__main__.py")
    ]
    assert importers == []
