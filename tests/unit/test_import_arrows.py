"""Import arrows point down: shared plumbing names no component, and a gateway does not borrow
the other gateway's internals (what both need lives in appliance.forwarding, appliance.txlog,
appliance.serving or appliance.upstream)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "appliance"
COMPONENTS = ("inway", "outway", "manager", "controller", "demo", "cli")
PLUMBING = ("serving", "forwarding", "upstream", "txlog", "tls", "hsm", "pki")


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def offences(package: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for name in sorted(imported(path)):
            parts = name.split(".")
            if len(parts) > 1 and parts[0] == "appliance" and parts[1] in forbidden:
                found.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    return found


@pytest.mark.parametrize("package", PLUMBING)
def test_plumbing_names_no_component(package: str) -> None:
    assert offences(package, COMPONENTS) == []


@pytest.mark.parametrize(("gateway", "other"), [("inway", "outway"), ("outway", "inway")])
def test_a_gateway_does_not_borrow_the_other_gateways_internals(gateway: str, other: str) -> None:
    assert offences(gateway, (other,)) == []


def test_the_check_sees_imports() -> None:
    """Not vacuous: the gateways do import the shared plumbing."""
    assert offences("inway", ("forwarding",))
    assert offences("outway", ("forwarding",))
