"""The layer rules of docs/architecture.md, checked on every .py file of the repository.

A layer may import only the layers below it (storage, l402 and rest import nothing of
ours; lightning and ipfs only rest; the gateway never the client; the client never the
gateway). The l402 protocol is pure standard library, and the gateway has SQL text only in
gateway/persistence/. Read from the syntax tree, so imports inside functions count too.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

ANYTHING = frozenset({"anything"})
# Package → the packages of ours it may import (itself always).
ALLOWED: dict[str, frozenset[str]] = {
    "storage": frozenset(),
    "l402": frozenset(),
    "rest": frozenset(),
    "lightning": frozenset({"rest"}),
    "ipfs": frozenset({"rest"}),
    "gateway": frozenset({"storage", "l402", "lightning", "ipfs", "rest"}),
    "client": frozenset({"storage", "l402", "lightning", "rest"}),
    "sandbox": ANYTHING,
    "regtest": ANYTHING,
    "bench": ANYTHING,
    "tests": ANYTHING,
}
OURS = frozenset(ALLOWED)
# Pure packages: the standard library and, for storage, its format libraries only.
PURE_THIRD_PARTY: dict[str, frozenset[str]] = {
    "l402": frozenset(),
    "storage": frozenset({"nacl", "blake3", "pydantic"}),
}
SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|"
    r"CREATE\s+(TABLE|INDEX)|PRAGMA\s)",
    re.DOTALL,
)


def imported_modules(source: str, package: str) -> Iterator[tuple[int, str]]:
    """(line, top-level module) of every import in ``source``, relative ones resolved."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: within the importing package
                yield node.lineno, package
            elif node.module:
                yield node.lineno, node.module.split(".")[0]


def layer_violations(source: str, package: str) -> list[str]:
    allowed = ALLOWED[package]
    if allowed is ANYTHING:
        return []
    return [
        f"line {line}: {package} imports {module}"
        for line, module in imported_modules(source, package)
        if module in OURS and module != package and module not in allowed
    ]


def purity_violations(source: str, package: str) -> list[str]:
    allowed = PURE_THIRD_PARTY.get(package)
    if allowed is None:
        return []
    return [
        f"line {line}: {package} imports {module}"
        for line, module in imported_modules(source, package)
        if module not in OURS and module not in sys.stdlib_module_names and module not in allowed
    ]


def sql_strings(source: str) -> list[str]:
    """Every string constant (f-string parts included) that reads as SQL."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if SQL.search(node.value):
                found.append(f"line {node.lineno}: {node.value[:60]!r}")
    return found


def python_files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "node_modules" not in p.parts)


def test_every_package_is_covered() -> None:
    """A new top-level package must be given its place in ALLOWED (and in the docs)."""
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages == OURS


@pytest.mark.parametrize("package", sorted(OURS))
def test_layers_import_only_downwards(package: str) -> None:
    problems = [
        f"{path.relative_to(ROOT)}: {problem}"
        for path in python_files(package)
        for problem in layer_violations(path.read_text(), package)
    ]
    assert problems == []


@pytest.mark.parametrize("package", sorted(PURE_THIRD_PARTY))
def test_pure_packages_need_no_io_libraries(package: str) -> None:
    problems = [
        f"{path.relative_to(ROOT)}: {problem}"
        for path in python_files(package)
        for problem in purity_violations(path.read_text(), package)
    ]
    assert problems == []


def test_gateway_sql_only_in_persistence() -> None:
    persistence = ROOT / "gateway" / "persistence"
    problems = [
        f"{path.relative_to(ROOT)}: {found}"
        for path in python_files("gateway")
        if persistence not in path.parents
        for found in sql_strings(path.read_text())
    ]
    assert problems == []


def test_the_checks_catch_what_they_are_for() -> None:
    """The rules above would pass vacuously if the checkers saw nothing."""
    assert layer_violations("import gateway.app\n", "client") == ["line 1: client imports gateway"]
    assert layer_violations("def f():\n    from client import api\n", "gateway") == [
        "line 2: gateway imports client"
    ]
    assert layer_violations("from lightning.lnd import LndRestClient\n", "ipfs") != []
    assert layer_violations("from rest.session import LazySession\n", "ipfs") == []
    assert layer_violations("from . import caveats\n", "l402") == []
    assert layer_violations("import gateway\n", "regtest") == []
    assert purity_violations("import aiohttp\n", "l402") == ["line 1: l402 imports aiohttp"]
    assert purity_violations("import hashlib\nfrom l402 import x\n", "l402") == []
    assert sql_strings('q = f"SELECT id FROM files WHERE x IN ({marks})"\n') != []
    assert sql_strings('conn.execute("UPDATE files SET state = ?")\n') != []
    assert sql_strings('"INSERT OR IGNORE INTO unpin_queue (cid) VALUES (?)"\n') != []
    assert sql_strings('"""Select a tenant; update the files."""\n') == []
