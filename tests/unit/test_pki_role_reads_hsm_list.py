"""The pki role reads `sluis hsm list` by its columns (roles/pki/vars/main.yml): the days a
certificate has left decide whether a run asks for a new one. A column added to the table once
moved them, and every run renewed (the appliance scenario's idempotence run caught it). This
applies the role's own patterns to the table the CLI prints."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import yaml

from appliance.cli.hsm import format_table
from appliance.hsm.keys import ObjectInfo

ROLE_VARS = Path(__file__).resolve().parents[2] / "roles" / "pki" / "vars" / "main.yml"
LABEL = "sluis-organisation"


def _patterns(name: str) -> list[str]:
    """The regular expressions in the Jinja expression of ``name``, joined as Jinja joins the
    quoted pieces around the label (`'...' ~ (label | regex_escape) ~ '...'`)."""
    expression = yaml.safe_load(ROLE_VARS.read_text(encoding="utf-8"))[name]
    pieces = re.findall(r"'((?:[^'\\]|\\.)*)'", expression)
    return [piece for piece in pieces if piece.startswith(("(?m)", r"\s"))]


def _table() -> str:
    key = ObjectInfo(
        kind="private-key",
        label=LABEL,
        id_hex="01",
        algorithm="ec-p256",
        sensitive=True,
        extractable=False,
        protection={"always-sensitive": True, "never-extractable": True, "local": True},
    )
    certificate = ObjectInfo(
        kind="certificate",
        label=LABEL,
        id_hex="01",
        subject="CN=gemeente",
        not_after=datetime(2027, 12, 7, tzinfo=UTC),
        days_to_expiry=365,
    )
    return format_table([key, certificate])


def test_the_days_left_are_read_from_the_days_column() -> None:
    start, rest = _patterns("pki_certificate_days_left")
    found = re.search(start + re.escape(LABEL) + rest, _table())
    assert found is not None, _table()
    assert found.group(1) == "365"


def test_the_key_is_found() -> None:
    (start, rest) = _patterns("pki_key_present")
    assert re.search(start + re.escape(LABEL) + rest, _table())
