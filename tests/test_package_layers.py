"""The subpackages of emo_plugin form layers: each imports only packages listed above it in docs/architecture.md.

The package table of ``docs/architecture.md`` is ordered from the bottom layer up, and its "depends on" column
names the emo_plugin packages each one imports. This test reads every import statement of the package (also
those inside functions) and checks the table against them both ways: nothing imported that is not listed,
nothing listed that is not imported, every listed dependency in an earlier row (so no cycle can exist), and
top-level modules (``emo_plugin/*.py``) importing no subpackage.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "emo_plugin"
ARCHITECTURE = PACKAGE.parent / "docs/architecture.md"
TOP = "(top)"


def _subpackages() -> set[str]:
    return {p.name for p in PACKAGE.iterdir() if p.is_dir() and any(p.rglob("*.py"))}


def _imported_modules(path: Path) -> set[str]:
    """Every ``emo_plugin...`` module name ``path`` imports, relative imports resolved."""
    names = set()
    package_parts = ["emo_plugin", *path.relative_to(PACKAGE).parts[:-1]]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return {n for n in names if n == "emo_plugin" or n.startswith("emo_plugin.")}


def _layer_of(module: str, subpackages: set[str]) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in subpackages else TOP


def actual_dependencies() -> dict[str, set[str]]:
    subpackages = _subpackages()
    graph: dict[str, set[str]] = {name: set() for name in subpackages | {TOP}}
    for path in PACKAGE.rglob("*.py"):
        source = path.relative_to(PACKAGE).parts[0] if len(path.relative_to(PACKAGE).parts) > 1 else TOP
        for module in _imported_modules(path):
            target = _layer_of(module, subpackages)
            if target not in (source, TOP):  # every package may use the top-level modules
                graph[source].add(target)
    return graph


def documented_layers() -> list[tuple[str, set[str]]]:
    """(package, declared dependencies) per row of the package table, in the table's order."""
    rows, subpackages = [], _subpackages()
    for line in ARCHITECTURE.read_text().splitlines():
        match = re.match(r"\|\s*`emo_plugin/(\w*)/?`\s*(\(top\))?\s*\|.*\|(.*)\|\s*$", line)
        if match:
            name = match.group(1) or TOP
            rows.append((name, set(re.findall(r"`(\w+)`", match.group(3))) & subpackages))
    return rows


def test_the_table_lists_every_subpackage_once():
    names = [name for name, _ in documented_layers()]
    assert len(names) == len(set(names)), f"docs/architecture.md lists a package twice: {names}"
    assert _subpackages() | {TOP} <= set(names), f"not in docs/architecture.md: {_subpackages() - set(names)}"


def test_each_package_imports_exactly_what_the_table_says():
    graph = actual_dependencies()
    for name, declared in documented_layers():
        if name in graph:
            assert graph[name] == declared, (
                f"emo_plugin/{name}: imports {sorted(graph[name])}, docs/architecture.md says {sorted(declared)}")


def test_every_dependency_is_a_lower_layer():
    seen: set[str] = set()
    for name, declared in documented_layers():
        above = declared - seen
        assert not above, f"emo_plugin/{name} depends on {sorted(above)}, which the table puts above it (a cycle)"
        seen.add(name)


def test_top_level_modules_import_no_subpackage():
    assert actual_dependencies()[TOP] == set(), actual_dependencies()[TOP]
