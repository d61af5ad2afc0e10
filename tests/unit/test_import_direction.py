"""Imports flow one way: `core` imports neither process, and neither process imports the
other. Read from the source (every `import` and `from ... import`, also inside functions and
`TYPE_CHECKING` blocks), so a violation fails here before it becomes an import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Which top-level packages each package must not import; bench and tests may import anything.
FORBIDDEN = {
    "core": {"ingest", "consumer", "bench", "tests"},
    "consumer": {"ingest", "bench", "tests"},
    "ingest": {"consumer", "bench", "tests"},
}


def imported_packages(source: str, module: str) -> set[str]:
    """The top-level package of every module `source` imports (`module` resolves the relative
    imports, e.g. `from . import x` in `core.settings` is `core`)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".")[: -node.level] or [module]
                found.add(package[0])
            elif node.module:
                found.add(node.module.split(".")[0])
    return found


def test_a_violation_is_seen() -> None:
    source = "import os\nfrom ingest.events import X\n\ndef f():\n    import consumer.loop\n"
    assert imported_packages(source, "core.example") == {"os", "ingest", "consumer"}
    assert imported_packages("from . import x\n", "core.example") == {"core"}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    wrong = []
    for path in files:
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        bad = imported_packages(path.read_text(), module) & FORBIDDEN[package]
        wrong += [f"{path.relative_to(ROOT)} imports {name}" for name in sorted(bad)]
    assert not wrong, (
        f"{package}/ must not import {sorted(FORBIDDEN[package])}; what both processes need "
        f"belongs in core/: {wrong}"
    )
