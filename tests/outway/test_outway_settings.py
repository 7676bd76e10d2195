"""[outway] configuration, the log writers, the Manager token fetcher, token claim checks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest
from outwaytest import GRANT, GROUP_ID, INWAY, OIN_SERVICE, SERVICE, claims_for, unsigned_token

from appliance.cli.serve import COMPONENTS, _default_bind
from appliance.config import OutwaySettings, load_config
from appliance.errors import ConfigurationError
from appliance.manager.peer_client import PeerClient
from appliance.outway.grants import Route
from appliance.outway.logging import JsonLinesLogWriter, load_log_writer
from appliance.outway.settings import resolve_runtime
from appliance.outway.tokens import ManagerTokenFetcher, TokenUnavailable, checked_token
from appliance.txlog.record import Direction, LogRecord, PurposeBinding

BASE = """
[hsm]
token_label = "t"
pin_file = "/etc/sluis/hsm.pin"

[tls]
certificate_chain = "/c.pem"
key_reference = "/k.pem"
trust_anchors = "/a.pem"
crls = "/crl.pem"
openssl_conf = "/o.cnf"

[manager]
peer_name = "Gemeente"
group_id = "sluis.demo"
address = "https://gemeente.sluis.test:8443"
database = "sqlite:////var/lib/sluis/manager.db"
"""

ROUTE = Route(GRANT, OIN_SERVICE, SERVICE)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sluis.toml"
    path.write_text(BASE + text, encoding="utf-8")
    return path


def test_outway_section_and_defaults(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        """
[outway]
bind = "10.0.0.2:8080"
transaction_log = "jsonl:/var/log/x.jsonl"
token_refresh_seconds = 60
forward_purpose_headers = true
""",
    )
    config = load_config(path)
    assert config.outway is not None
    assert config.outway.bind == "10.0.0.2:8080"
    runtime = resolve_runtime(config)
    assert runtime.group_id == "sluis.demo"  # from [manager]
    assert runtime.token_refresh == 60.0
    assert runtime.forward_purpose_headers is True
    assert _default_bind("outway", path) == "10.0.0.2:8080"
    assert COMPONENTS["outway"] == "appliance.outway.app:create_app()"
    assert _default_bind("outway", _config(tmp_path, "")) == OutwaySettings().bind


@pytest.mark.parametrize(
    "text",
    [
        '[outway]\ngroup_id = "not a group"\n',
        "[outway]\nread_timeout_seconds = 0\n",
        "[outway]\ntoken_refresh_seconds = -1\n",
        '[outway]\nforward_purpose_headers = "yes"\n',
        "[outway]\nunknown = 1\n",
    ],
)
def test_bad_outway_settings_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigurationError):
        resolve_runtime(load_config(_config(tmp_path, text)))


def test_no_outway_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no \\[outway\\]"):
        resolve_runtime(load_config(_config(tmp_path, "")))


def test_log_writers(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, "[outway]\n"))
    with pytest.raises(ConfigurationError, match="txlog"):
        load_log_writer("", config)  # no [txlog]: the outway does not start
    with pytest.raises(ConfigurationError):
        load_log_writer("jsonl:relative.jsonl", config)
    with pytest.raises(ConfigurationError):
        load_log_writer("nomodule", config)
    writer = load_log_writer(f"jsonl:{tmp_path / 'log.jsonl'}", config)
    assert isinstance(writer, JsonLinesLogWriter)
    record = LogRecord.from_access_token(
        claims_for(ROUTE),
        direction=Direction.OUTGOING,
        purpose=PurposeBinding(processing_activity_id="activity-1"),
    )
    asyncio.run(writer.write(record))
    [line] = writer.records()
    assert line["direction"] == "DIRECTION_OUTGOING"
    assert line["purpose"]["processing_activity_id"] == "activity-1"


def test_durable_log_from_txlog_section(tmp_path: Path) -> None:
    config = load_config(
        _config(tmp_path, f'[outway]\n[txlog]\ndatabase = "sqlite:///{tmp_path / "tx.db"}"\n')
    )
    writer = load_log_writer("", config)
    try:
        record = LogRecord.from_access_token(claims_for(ROUTE), direction=Direction.OUTGOING)
        asyncio.run(writer.write(record))
    finally:
        writer.close()  # type: ignore[attr-defined]


class FakeClient:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str, str]] = []

    async def token(self, address: str, grant_hash: str, client_id: str) -> dict[str, Any]:
        self.calls.append((address, grant_hash, client_id))
        return self.answer


class FakeDirectory:
    async def manager_address(self, peer_id: str) -> str:
        if peer_id != OIN_SERVICE:
            raise LookupError(peer_id)
        return "https://registers.sluis.test:8443"


def test_the_manager_fetcher_asks_the_service_peers_manager() -> None:
    raw = unsigned_token(claims_for(ROUTE))
    client = FakeClient({"access_token": raw, "token_type": "bearer"})
    fetcher = ManagerTokenFetcher(cast(PeerClient, client), FakeDirectory(), "00000001000000000102")
    assert asyncio.run(fetcher.fetch(ROUTE)) == raw
    assert client.calls == [("https://registers.sluis.test:8443", GRANT, "00000001000000000102")]
    with pytest.raises(TokenUnavailable):
        asyncio.run(fetcher.fetch(Route(GRANT, "00000001000000000999", SERVICE)))
    empty = ManagerTokenFetcher(cast(PeerClient, FakeClient({})), FakeDirectory(), "x")
    with pytest.raises(TokenUnavailable):
        asyncio.run(empty.fetch(ROUTE))


def test_token_claims_are_checked() -> None:
    now = 1_800_000_000.0
    token = checked_token(
        unsigned_token(claims_for(ROUTE, now=now)), ROUTE, group_id=GROUP_ID, now=now
    )
    assert token.inway == INWAY
    assert token.expires_at == now + 300
    for changes in ({"svc": "other"}, {"iss": "00000001000000000999"}, {"sub": ""}, {"aud": 5}):
        claims = {**claims_for(ROUTE, now=now), **changes}
        with pytest.raises(TokenUnavailable):
            checked_token(unsigned_token(claims), ROUTE, group_id=GROUP_ID, now=now)
    with pytest.raises(TokenUnavailable):
        checked_token("not-a-jws", ROUTE, group_id=GROUP_ID, now=now)


def test_pass_headers_are_per_peer_and_service(tmp_path: Path) -> None:
    key = f"{OIN_SERVICE}/{SERVICE}"
    runtime = resolve_runtime(
        load_config(_config(tmp_path, f'[outway]\npass_headers = {{"{key}" = "X-Remote-User"}}\n'))
    )
    assert runtime.pass_headers == {key: {"x-remote-user"}}


@pytest.mark.parametrize(
    ("table", "complaint"),
    [
        ('{kadaster = "X-Remote-User"}', "is not peer-id/service"),
        ('{"00000001000000000202/kadaster" = "fsc-authorization"}', "Fsc-\\*"),
    ],
)
def test_pass_headers_that_cannot_be_are_refused_at_start(
    tmp_path: Path, table: str, complaint: str
) -> None:
    config = load_config(_config(tmp_path, f"[outway]\npass_headers = {table}\n"))
    with pytest.raises(ConfigurationError, match=complaint):
        resolve_runtime(config)
