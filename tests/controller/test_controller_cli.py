"""``sluis controller``: accounts and tokens from the command line, printed once, audited."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pytest

from appliance.cli.main import main
from appliance.config import ControllerSettings
from appliance.controller.auth import TOKEN_DAYS, Authenticator
from appliance.controller.store import ControllerStore

HERE = "192.0.2.1"  # the client address of the logins checked here

CONFIG = """
[hsm]
token_label = "t"

[tls]
certificate_chain = "/c.pem"
key_reference = "/k.pem"
trust_anchors = "/a.pem"
crls = "/crl.pem"
openssl_conf = "/o.cnf"

[controller]
database = "sqlite:///{database}"
session_idle_minutes = 10
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "sluis.toml"
    path.write_text(CONFIG.format(database=tmp_path / "controller.db"))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, (json.loads(out) if code == 0 and "--json" in argv else {"text": out})


def authenticator(config: Path) -> Authenticator:
    settings = ControllerSettings(database=f"sqlite:///{config.parent / 'controller.db'}")
    return Authenticator(ControllerStore.open(settings.database), settings)


def test_create_user_with_a_generated_password(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(
        capsys,
        "controller",
        "create-user",
        "--config",
        str(config),
        "--username",
        "alice",
        "--role",
        "administrator",
        "--json",
    )
    assert code == 0
    password = out["password"]
    assert isinstance(password, str)
    assert len(password) >= 24
    auth = authenticator(config)
    assert auth.check_password("alice", password, HERE).role == "administrator"
    entries, _ = auth.store.query_audit(action="user.create")
    assert entries[0].actor.startswith("cli")
    assert entries[0].peer_address == "local"
    assert password not in str(entries[0].as_api())


def test_create_user_with_a_password_from_stdin(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("my own long passphrase\n"))
    code, out = run(
        capsys,
        "controller",
        "create-user",
        "--config",
        str(config),
        "--username",
        "bob",
        "--role",
        "auditor",
        "--password-stdin",
    )
    assert code == 0
    assert "passphrase" not in out["text"]
    assert authenticator(config).check_password("bob", "my own long passphrase", HERE)
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert (
        main(
            [
                "controller",
                "create-user",
                "--config",
                str(config),
                "--username",
                "carol",
                "--role",
                "auditor",
                "--password-stdin",
            ]
        )
        == 2
    )
    assert "at least 12" in capsys.readouterr().err
    assert (
        main(
            [
                "controller",
                "create-user",
                "--config",
                str(config),
                "--username",
                "dan",
                "--role",
                "root",
            ]
        )
        == 2
    )


def test_tokens_unlock_and_disable(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(
        capsys,
        "controller",
        "create-token",
        "--config",
        str(config),
        "--name",
        "ci",
        "--role",
        "service_owner",
        "--days",
        "30",
        "--json",
    )
    assert code == 0
    token = out["token"]
    assert isinstance(token, str)
    auth = authenticator(config)
    principal = auth.bearer(token)
    assert principal is not None
    assert principal.role == "service_owner"
    _, listed = run(capsys, "controller", "list-tokens", "--config", str(config), "--json")
    assert token not in json.dumps(listed)
    record_id = listed["tokens"][0]["id"]  # type: ignore[index]
    assert (
        run(capsys, "controller", "revoke-token", "--config", str(config), str(record_id))[0] == 0
    )
    assert auth.bearer(token) is None

    run(
        capsys,
        "controller",
        "create-user",
        "--config",
        str(config),
        "--username",
        "erin",
        "--role",
        "auditor",
    )
    assert (
        run(capsys, "controller", "disable-user", "--config", str(config), "--username", "erin")[0]
        == 0
    )
    assert auth.store.get_user("erin").disabled  # type: ignore[union-attr]
    assert (
        run(capsys, "controller", "unlock-user", "--config", str(config), "--username", "erin")[0]
        == 0
    )
    _, users = run(capsys, "controller", "list-users", "--config", str(config))
    assert "erin" in str(users["text"])


def test_a_token_expires_after_90_days_unless_asked_otherwise(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same default as the Users page and the API (it never expired from the CLI)."""
    base = ("controller", "create-token", "--config", str(config), "--role", "auditor", "--json")
    assert run(capsys, *base, "--name", "siem")[0] == 0
    assert run(capsys, *base, "--name", "forever", "--days", "0")[0] == 0
    tokens = {t.name: t for t in authenticator(config).store.list_tokens()}
    siem = tokens["siem"]
    assert siem.expires_at is not None
    assert siem.expires_at - siem.created_at == timedelta(days=TOKEN_DAYS) == timedelta(days=90)
    assert tokens["forever"].expires_at is None


def test_a_generated_password_must_be_changed(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Printed on a terminal: its owner chooses their own at the first login; a password
    given on standard input (the Ansible role's first administrator) need not change."""
    base = ("controller", "create-user", "--config", str(config), "--role", "auditor")
    assert run(capsys, *base, "--username", "gen")[0] == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("a password of twelve+\n"))
    assert run(capsys, *base, "--username", "piped", "--password-stdin")[0] == 0
    store = authenticator(config).store
    gen, piped = store.get_user("gen"), store.get_user("piped")
    assert gen is not None
    assert piped is not None
    assert gen.must_change_password
    assert not piped.must_change_password
