"""The inway as a real process against everything a peer can send it, over real mutual TLS.

``sluis serve inway`` under gunicorn, its key in A's SoftHSM token, the durable SQLite
transaction log of ``[txlog]``; a backend in this process. Peers call it from fresh
interpreters with their own SoftHSM tokens: B, and B2 (the same organisation, OIN and all, with
another certificate): ``peer_client.py`` (aiohttp) and ``raw_client.py`` (bytes exactly as
written). Tokens are made in A's HSM the way A's Manager makes them (``issue_token.py``).

Covered: every inway error code, the token's binding to the connection's certificate, log
before forward, fail closed when the log cannot be written (made unwritable while the inway
runs), strict request framing, encoded path tricks, hop-by-hop and identity headers, and the
write timeout towards a backend that stops reading.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from inwaytest import FORGED, EchoBackend, EchoState, RawBackend, closed_port, log_unwritable
from raw_client import converse

from appliance.config import SluisConfig, load_config
from appliance.demo.processes import Component, start_component
from appliance.demo.provision import Organisation, provision_organisation
from appliance.pki.ca import DemoCA
from appliance.pki.identity import OrganisationIdentity
from appliance.tls.peer import certificate_thumbprint, public_key_thumbprint
from appliance.txlog.store import TransactionLog

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
GROUP_ID = "sluis.inway.process"
OIN_A = "00000001000000000301"
OIN_B = "00000001000000000302"
SERVICE = "basisregistratie"
UNREACHABLE = "unreachable"
STUCK = "stuck"
HOST = "a.sluis.test"
INWAY_ADDRESS = f"https://{HOST}:443"
WRITE_TIMEOUT = 2
MIB = 1024 * 1024


def _leaf(config: SluisConfig) -> x509.Certificate:
    return x509.load_pem_x509_certificates(config.tls.certificate_chain.read_bytes())[0]


def _thumbprint(config: SluisConfig) -> str:
    return certificate_thumbprint(_leaf(config).public_bytes(Encoding.DER))


def _txid() -> str:
    return str(uuid.uuid4())


@dataclass
class StuckBackend:
    """Takes a connection, reads the request head, then reads nothing until released."""

    release: threading.Event = field(default_factory=threading.Event)
    drained: list[tuple[int, bool]] = field(default_factory=list)  # (bytes after head, EOF?)
    server: RawBackend | None = None

    def start(self) -> RawBackend:
        async def respond(reader: asyncio.StreamReader, writer: Any, head: bytes) -> None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.release.wait, 60)
            size, eof = 0, False
            try:
                while True:
                    chunk = await asyncio.wait_for(reader.read(1 << 20), 5)
                    if not chunk:
                        eof = True
                        break
                    size += len(chunk)
            except ConnectionError:
                eof = True  # reset: the inway is gone too
            except TimeoutError:
                pass  # the inway still holds the connection open
            self.drained.append((size, eof))

        self.server = RawBackend(respond)
        return self.server


def run_script(script: str, config: SluisConfig, request: dict[str, Any]) -> str:
    """``python <script> CONFIG`` with ``request`` on stdin, as that appliance (its HSM)."""
    assert config.source is not None
    result = subprocess.run(
        [sys.executable, str(HERE / script), str(config.source)],
        input=json.dumps(request),
        env=_environment(config),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _environment(config: SluisConfig) -> dict[str, str]:
    return {**os.environ, "OPENSSL_CONF": str(config.tls.openssl_conf), **config.hsm.environment()}


class Helper:
    """``python <script> CONFIG --serve``: one interpreter and HSM login for the module."""

    def __init__(self, script: str, config: SluisConfig, log: Path) -> None:
        assert config.source is not None
        self.script = script
        self.log = log
        with log.open("ab") as errors:
            self.process = subprocess.Popen(
                [sys.executable, str(HERE / script), str(config.source), "--serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=_environment(config),
                text=True,
            )

    def ask(self, plan: dict[str, Any]) -> Any:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(json.dumps(plan) + "\n")
        stdin.flush()
        line = stdout.readline()
        assert line, f"{self.script} died:\n{self.log.read_text(errors='replace')}"
        return json.loads(line)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Setup:
    root: Path
    a: SluisConfig
    b: SluisConfig
    b2: SluisConfig
    backend: EchoBackend
    stuck: StuckBackend
    inway: Component
    txlog_dir: Path
    log: TransactionLog
    tokens: dict[str, str]
    peer_client: Helper  # as B
    raw_client: Helper  # as B

    def run(self, script: str, config: SluisConfig, request: dict[str, Any]) -> str:
        return run_script(script, config, request)

    def call(
        self, requests: list[dict[str, Any]], config: SluisConfig | None = None
    ) -> list[dict[str, Any]]:
        """Requests over one mutual-TLS connection as B (or ``config``), via aiohttp."""
        plan = {
            "url": f"https://127.0.0.1:{self.inway.port}",
            "server_name": HOST,
            "requests": requests,
        }
        if config is None:
            return list(self.peer_client.ask(plan)["results"])
        return list(json.loads(self.run("peer_client.py", config, plan))["results"])

    def raw(
        self, conversations: list[list[dict[str, Any]]], *, until: str = "response"
    ) -> list[Any]:
        """Each conversation on its own mutual-TLS connection as B, bytes as written; the
        answer read until one whole response arrived (or, ``until="close"``, the end)."""
        plan = {
            "host": "127.0.0.1",
            "port": self.inway.port,
            "server_name": HOST,
            "conversations": [
                {"steps": steps, "timeout": 10, "until": until} for steps in conversations
            ],
        }
        return list(self.raw_client.ask(plan)["answers"])

    def logged(self, transaction: str) -> bool:
        records, _ = self.log.query(OIN_A, transaction_ids=[transaction])
        return bool(records)


def _issue(a: SluisConfig, b: SluisConfig, b2: SluisConfig) -> dict[str, str]:
    """The tokens the tests present, made in A's HSM (one in B's)."""
    base = {
        "outway_peer_id": OIN_B,
        "outway_public_key_thumbprint": public_key_thumbprint(_leaf(b)),
        "service": SERVICE,
        "inway_address": INWAY_ADDRESS,
        "client_certificate_thumbprint": _thumbprint(b),
    }
    wanted = {
        "valid": {},
        UNREACHABLE: {"service": UNREACHABLE},
        STUCK: {"service": STUCK},
        "b2": {
            "client_certificate_thumbprint": _thumbprint(b2),
            "outway_public_key_thumbprint": public_key_thumbprint(_leaf(b2)),
        },
        "other_inway": {"inway_address": "https://elsewhere.sluis.test:443"},
        "expired": {"age_seconds": 900, "lifetime_seconds": 300},
        "other_group": {"group_id": "another.group"},
        "unknown_service": {"service": "not-offered-here"},
    }
    names = list(wanted)
    tokens = json.loads(
        run_script("issue_token.py", a, {"tokens": [{**base, **wanted[n]} for n in names]})
    )
    issued = dict(zip(names, tokens, strict=True))
    # Signed in B's own HSM, claiming to be a token of this inway's Group and address.
    issued["signed_by_b"] = run_script("issue_token.py", b, {**base, "group_id": GROUP_ID}).strip()
    return issued


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("inway-process")
    ca = DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
    configs = {}
    for name, oin in (("a", OIN_A), ("b", OIN_B), ("b2", OIN_B)):
        identity = OrganisationIdentity(f"Organisation {name}", oin, (f"{name}.sluis.test",))
        configs[name] = provision_organisation(
            ca, Organisation(identity, f"inway-process-{name}"), root / name
        )
    txlog_dir = root / "a" / "txlog"
    txlog_dir.mkdir()
    txlog_url = f"sqlite:///{txlog_dir / 'txlog.db'}"
    state = EchoState()
    backend = EchoBackend(state)
    backend.release_last.set()
    stuck = StuckBackend()
    stuck_server = stuck.start()
    a_path = configs["a"].source
    assert a_path is not None
    services = [
        f"{SERVICE}={backend.url}/api",
        f"{UNREACHABLE}=http://127.0.0.1:{closed_port()}",
        f"{STUCK}={stuck_server.url}",
    ]
    with a_path.open("a", encoding="utf-8") as toml:
        toml.write(
            "\n[inway]\n"
            f"services = {json.dumps(services)}\n"
            f'address = "{INWAY_ADDRESS}"\n'
            f'group_id = "{GROUP_ID}"\n'
            'transaction_log = "appliance.txlog.gateway:inway_writer"\n'
            "read_timeout_seconds = 5\n"
            f"write_timeout_seconds = {WRITE_TIMEOUT}\n"
            f'pass_headers = {{{SERVICE} = "X-Remote-User"}}\n'
            f'\n[txlog]\ndatabase = "{txlog_url}"\n'
        )
    a = load_config(a_path)
    tokens = _issue(a, configs["b"], configs["b2"])
    inway = start_component("inway-a", a_path, "inway", workers=1, log_dir=root / "logs")
    log = TransactionLog.open(txlog_url, migrate_schema=False)
    state.lookup = lambda transaction: bool(log.query(OIN_A, transaction_ids=[transaction])[0])
    helpers = [
        Helper(script, configs["b"], root / "logs" / f"{script}.log")
        for script in ("peer_client.py", "raw_client.py")
    ]
    try:
        yield Setup(
            root,
            a,
            configs["b"],
            configs["b2"],
            backend,
            stuck,
            inway,
            txlog_dir,
            log,
            tokens,
            *helpers,
        )
    finally:
        for helper in helpers:
            helper.close()
        stuck.release.set()
        inway.stop()
        log.close()
        backend.stop()
        stuck_server.stop()


def _headers(result: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in result["headers"]}


def _fsc_error(result: dict[str, Any]) -> tuple[int, str]:
    """(status, code) of an FSC error of the inway; checks the header and the domain."""
    error = json.loads(result["body"])
    assert error["domain"] == "ERROR_DOMAIN_INWAY", result
    assert _headers(result)["fsc-error-code"] == error["code"], result
    return result["status"], error["code"]


def _raw_request(
    setup: Setup,
    method: str = "GET",
    path: str = "/items/1",
    *,
    transaction: str | None = None,
    credential: str = "valid",
    extra: str = "",
    host: str = f"Host: {HOST}\r\n",
    version: str = "HTTP/1.1",
    eol: str = "\r\n",
) -> str:
    """A request head as bytes (latin-1 text), with a valid token unless told otherwise."""
    return (
        f"{method} {path} {version}{eol}{host}"
        f"Fsc-Authorization: {setup.tokens[credential]}{eol}"
        f"Fsc-Transaction-Id: {transaction or _txid()}{eol}"
        f"{extra}{eol}"
    )


# -- error codes ------------------------------------------------------------------------------


def test_every_inway_error_code_over_mutual_tls(setup: Setup) -> None:
    tokens = setup.tokens
    ok_id = _txid()

    def request(path: str = "/items/1", credential: str | None = "valid", **headers: str) -> Any:
        fsc = {"Fsc-Transaction-Id": headers.pop("transaction", _txid())}
        if credential is not None:
            fsc["Fsc-Authorization"] = tokens[credential]
        fsc.update(headers)
        return {"method": "GET", "path": path, "headers": fsc}

    cases: list[tuple[dict[str, Any], int, str | None]] = [
        (request(transaction=ok_id), 200, None),
        (request(credential=None), 401, "ERROR_CODE_ACCESS_TOKEN_MISSING"),
        (request(credential="signed_by_b"), 401, "ERROR_CODE_ACCESS_TOKEN_INVALID"),
        (request(credential="other_inway"), 401, "ERROR_CODE_ACCESS_TOKEN_INVALID"),
        (request(credential="b2"), 401, "ERROR_CODE_ACCESS_TOKEN_INVALID"),  # B2's certificate
        (request(credential="expired"), 401, "ERROR_CODE_ACCESS_TOKEN_EXPIRED"),
        (request(credential="other_group"), 403, "ERROR_CODE_WRONG_GROUP_ID_IN_TOKEN"),
        (request(credential="unknown_service"), 404, "ERROR_CODE_SERVICE_NOT_FOUND"),
        (request(transaction=""), 400, "MISSING_LOG_RECORD_ID"),
        (request(transaction="not-a-uuid"), 400, "INVALID_LOG_RECORD_ID"),
        (request(transaction=ok_id), 400, "INVALID_LOG_RECORD_ID"),  # already used
        (request("/a/%2e%2e/%2e%2e/etc/passwd"), 400, "ERROR_CODE_INVALID_PATH"),
        (request(credential=UNREACHABLE), 502, "ERROR_CODE_SERVICE_UNREACHABLE"),
    ]
    started_before, _, _ = setup.backend.state.counts()
    results = setup.call([c[0] for c in cases])

    for (sent, status, code), result in zip(cases, results, strict=True):
        assert result["status"] == status, (sent["headers"], result, setup.inway.log())
        if code is None:
            assert json.loads(result["body"])["logged"] is True  # logged before it arrived
            continue
        assert _fsc_error(result) == (status, code)
        if status == 401:
            assert _headers(result)["www-authenticate"] == "Bearer"
    # Only the authorised request reached the backend (the unreachable one went elsewhere).
    started_after, _, _ = setup.backend.state.counts()
    assert started_after - started_before == 1
    # Logged: what was forwarded (or tried); never what was refused before forwarding.
    for (sent, status, _code), _result in zip(cases, results, strict=True):
        transaction = sent["headers"]["Fsc-Transaction-Id"]
        if status in (200, 502):
            assert setup.logged(transaction), sent
        elif transaction != ok_id and transaction not in ("", "not-a-uuid"):
            assert not setup.logged(transaction), sent
    assert "Traceback" not in setup.inway.log()


def test_a_token_works_only_over_the_certificate_it_is_bound_to(setup: Setup) -> None:
    """B and B2 are the same organisation (one OIN) with two certificates: the binding is to
    the certificate of the connection, not to the peer."""

    def fetch(token: str) -> dict[str, Any]:
        fsc = {"Fsc-Authorization": setup.tokens[token], "Fsc-Transaction-Id": _txid()}
        return {"method": "GET", "path": "/bound", "headers": fsc}

    from_b2 = setup.call([fetch("b2"), fetch("valid")], config=setup.b2)
    from_b = setup.call([fetch("valid"), fetch("b2")])
    assert [r["status"] for r in from_b2] == [200, 401]
    assert [r["status"] for r in from_b] == [200, 401]
    for refused in (from_b2[1], from_b[1]):
        assert _fsc_error(refused) == (401, "ERROR_CODE_ACCESS_TOKEN_INVALID")
        assert "another certificate" in json.loads(refused["body"])["message"]


def test_connect_is_refused(setup: Setup) -> None:
    started, _, _ = setup.backend.state.counts()
    (answer,) = setup.raw(
        [[{"send": _raw_request(setup, "CONNECT", f"{HOST}:443", host=f"Host: {HOST}:443\r\n")}]],
        until="close",
    )
    head, _, body = answer["received"].partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 405 "), answer
    assert "\r\nfsc-error-code: error_code_method_unsupported" in head.lower()
    assert json.loads(body) == {
        "message": "the inway does not support CONNECT",
        "domain": "ERROR_DOMAIN_INWAY",
        "code": "ERROR_CODE_METHOD_UNSUPPORTED",
    }
    assert answer["closed"]
    assert setup.backend.state.counts()[0] == started


def test_a_group_certificate_without_a_peer_id_is_refused(setup: Setup, tmp_path: Path) -> None:
    """Signed by the Group's CA, so the handshake succeeds, but without the serialNumber that
    holds a Peer ID: Core's ERROR_CODE_PEER_CERTIFICATE_VERIFICATION_FAILED, nothing logged
    or forwarded. (The demo CA issues only certificates with an OIN; this one is signed with
    its intermediate key directly.)"""
    ca = DemoCA.open(setup.root / "ca")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    intermediate = ca.intermediate_certificate
    leaf = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "No Peer"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "nopeer.sluis.test"),
                ]
            )
        )
        .issuer_name(intermediate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(intermediate.public_key()),
            critical=False,
        )
        .sign(ca._intermediate_key, hashes.SHA256())
    )
    chain_file, key_file = tmp_path / "nopeer.pem", tmp_path / "nopeer.key"
    chain_file.write_bytes(
        leaf.public_bytes(Encoding.PEM) + intermediate.public_bytes(Encoding.PEM)
    )
    ctx = ssl.create_default_context(cafile=str(ca.trust_anchor_path))
    key_file.touch(mode=0o600)
    try:
        key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        ctx.load_cert_chain(str(chain_file), str(key_file))
    finally:
        key_file.unlink()  # the suite checks that no private key is left on disk
    transaction = _txid()
    started, _, _ = setup.backend.state.counts()
    plan = {"host": "127.0.0.1", "port": setup.inway.port, "server_name": HOST}
    answer = converse(
        plan,
        {"steps": [{"send": _raw_request(setup, transaction=transaction)}], "until": "response"},
        ctx,
    )
    head, _, body = answer["received"].partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 400 "), answer
    error = json.loads(body)
    assert error["code"] == "ERROR_CODE_PEER_CERTIFICATE_VERIFICATION_FAILED"
    assert error["domain"] == "ERROR_DOMAIN_INWAY"
    assert setup.backend.state.counts()[0] == started
    assert not setup.logged(transaction)


# -- the transaction log -----------------------------------------------------------------------


def test_no_log_record_no_request_and_recovery(setup: Setup) -> None:
    """The SQLite log is made unwritable while the inway runs (``chattr +i``: root ignores
    file modes), refused with TRANSACTION_LOG_WRITE_ERROR and nothing forwarded, then made
    writable again: the next request goes through without a restart."""

    def fetch() -> dict[str, Any]:
        fsc = {"Fsc-Authorization": setup.tokens["valid"], "Fsc-Transaction-Id": _txid()}
        return {"method": "POST", "path": "/write", "headers": fsc, "upload_mib": 1}

    (before,) = setup.call([fetch()])  # the log's write-ahead file exists from here on
    assert before["status"] == 200
    started, _, _ = setup.backend.state.counts()
    refused = fetch()
    with log_unwritable(setup.txlog_dir):
        (result,) = setup.call([refused])
    assert _fsc_error(result) == (500, "TRANSACTION_LOG_WRITE_ERROR")
    assert setup.backend.state.counts()[0] == started  # the backend received nothing
    assert not setup.logged(refused["headers"]["Fsc-Transaction-Id"])

    again = fetch()
    (after,) = setup.call([again])
    assert after["status"] == 200, after
    assert json.loads(after["body"])["logged"] is True
    assert setup.logged(again["headers"]["Fsc-Transaction-Id"])
    assert "was not committed" in setup.inway.log()


# -- request framing, paths, headers -------------------------------------------------------------


MALFORMED = {
    "Content-Length and Transfer-Encoding": {
        "method": "POST",
        "extra": "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "body": "0\r\n\r\n",
    },
    "Transfer-Encoding and Content-Length": {
        "method": "POST",
        "extra": "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "body": "0\r\n\r\n",
    },
    "bare LF line ends": {"eol": "\n", "host": f"Host: {HOST}\n"},
    "a bare LF ending the head": {"extra": "X-A: 1\r\n\n"},
    "a chunk size that is not hex": {
        "method": "POST",
        "extra": "Transfer-Encoding: chunked\r\n",
        "body": "zz\r\nhello\r\n0\r\n\r\n",
    },
    # Falcon's first receive() gets "hello" before the parser's verdict reaches the app.
    "a bad chunk size after a good chunk": {
        "method": "POST",
        "extra": "Transfer-Encoding: chunked\r\n",
        "body": "5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n",
    },
    "a chunk size that overflows": {
        "method": "POST",
        "extra": "Transfer-Encoding: chunked\r\n",
        "body": "1ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    },
    "a transfer coding other than chunked": {
        "method": "POST",
        "extra": "Transfer-Encoding: gzip, chunked\r\n",
        "body": "0\r\n\r\n",
    },
    "Transfer-Encoding in HTTP/1.0": {
        "method": "POST",
        "version": "HTTP/1.0",
        "extra": "Transfer-Encoding: chunked\r\n",
        "body": "0\r\n\r\n",
    },
    "two Host headers": {"host": f"Host: {HOST}\r\nHost: elsewhere.sluis.test\r\n"},
    "no Host header": {"host": ""},
    "obs-fold": {"extra": "X-A: 1\r\n  folded\r\n"},
}


def test_malformed_requests_are_refused_before_they_reach_the_backend(setup: Setup) -> None:
    transactions = {name: _txid() for name in MALFORMED}
    conversations = []
    for name, case in MALFORMED.items():
        options = {k: v for k, v in case.items() if k != "body"}
        head = _raw_request(setup, transaction=transactions[name], **options)
        conversations.append([{"send": head + case.get("body", "")}])
    # The same template, well formed: proves that only the framing is refused.
    control = _txid()
    chunked = "Transfer-Encoding: chunked\r\nConnection: close\r\n"
    body = "5\r\nhello\r\n0\r\n\r\n"
    conversations.append(
        [{"send": _raw_request(setup, "POST", transaction=control, extra=chunked) + body}]
    )
    started, _, _ = setup.backend.state.counts()
    answers = setup.raw(conversations, until="close")

    *refused, accepted = answers
    for name, answer in zip(MALFORMED, refused, strict=True):
        assert answer["received"].startswith("HTTP/1.1 400 "), (name, answer)
        assert answer["closed"], name
        assert not setup.logged(transactions[name]), name
    assert accepted["received"].startswith("HTTP/1.1 200 "), accepted
    assert json.loads(accepted["received"].partition("\r\n\r\n")[2])["body_size"] == 5
    assert setup.backend.state.counts()[0] == started + 1  # only the control got there


def test_a_bad_chunk_mid_body_never_completes_at_the_backend(setup: Setup) -> None:
    """Head and a first chunk are fine (the request is logged and on its way); a broken chunk
    follows. The backend must see the request aborted, never ended as if whole."""
    state = setup.backend.state
    started, completed, aborted = state.counts()
    transaction = _txid()
    head = _raw_request(
        setup, "POST", transaction=transaction, extra="Transfer-Encoding: chunked\r\n"
    )
    (answer,) = setup.raw(
        [[{"send": head + "5\r\nhello\r\n"}, {"sleep": 1.0}, {"send": "zz\r\nrest\r\n0\r\n\r\n"}]]
    )
    assert answer["received"].startswith("HTTP/1.1 400 "), answer
    deadline = time.monotonic() + 10
    while state.counts()[2] == aborted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state.counts() == (started + 1, completed, aborted + 1)
    assert setup.logged(transaction)  # it was a valid request when it was forwarded


ESCAPES = [
    "/%2e%2e/%2e%2e/etc/passwd",
    "/%2E%2E/admin",
    "/a/..%2f..%2fadmin",
    "/%2fetc%2fpasswd",
    "/a/%252e%252e/b",
    "/a/%252f..%252fb",
    "/a/..;/b",
    "/a/%5c..%5cb",
    "/a/%00",
    "/a/%25%32%65%25%32%65/b",
    "/a/%25%32%45%25%32%45/b",
    "/a/%c0%ae%c0%ae/b",
    "/a/%C0%AF",
    "/a/%25u002e%25u002e/b",
    "/a/%ef%bc%8e%ef%bc%8e/b",
]


def test_encoded_path_tricks_cannot_leave_the_service(setup: Setup) -> None:
    transactions = [_txid() for _ in ESCAPES]
    conversations = [
        [{"send": _raw_request(setup, path=path, transaction=transaction)}]
        for path, transaction in zip(ESCAPES, transactions, strict=True)
    ]
    conversations.append([{"send": _raw_request(setup, path="/a%20b/%2e%2e%2e/c%3Bd")}])
    started, _, _ = setup.backend.state.counts()
    *refused, safe = setup.raw(conversations)
    for path, transaction, answer in zip(ESCAPES, transactions, refused, strict=True):
        head, _, body = answer["received"].partition("\r\n\r\n")
        assert head.startswith("HTTP/1.1 400 "), (path, answer)
        assert json.loads(body)["code"] == "ERROR_CODE_INVALID_PATH", path
        assert not setup.logged(transaction), path
    assert safe["received"].startswith("HTTP/1.1 200 "), safe
    seen = json.loads(safe["received"].partition("\r\n\r\n")[2])
    assert seen["raw_path"] == "/api/a%20b/%2e%2e%2e/c%3Bd"  # below the base, as sent
    assert setup.backend.state.counts()[0] == started + 1


def test_hop_by_hop_and_identity_headers_never_cross_fsc_headers_always_do(setup: Setup) -> None:
    grant = "$1$3$" + "G" * 86
    transaction = _txid()
    extra = (
        "Connection: X-Private, Fsc-Authorization, Fsc-Transaction-Id, Fsc-Grant-Hash, "
        "Keep-Alive\r\n"
        "Keep-Alive: timeout=5\r\n"
        "TE: trailers\r\n"
        "X-Private: secret\r\n"
        "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
        "Proxy-Connection: keep-alive\r\n"
        f"Fsc-Grant-Hash: {grant}\r\n"
        "X-Forwarded-For: 10.1.2.3\r\n"
        "Forwarded: for=10.1.2.3;by=evil\r\n"
        "X-Forwarded-Client-Cert: Hash=forged;Subject=CN=someone-else\r\n"
        "X-Real-IP: 10.1.2.3\r\n"
        "X-Ssl-Client-Cert: forged\r\n"
        "X-Public: yes\r\n"
    )
    request = _raw_request(setup, "GET", "/headers", transaction=transaction, extra=extra)
    hop = _raw_request(setup, "GET", "/hop")
    echoed, answered = setup.raw([[{"send": request}], [{"send": hop}]])

    assert echoed["received"].startswith("HTTP/1.1 200 "), echoed
    seen = json.loads(echoed["received"].partition("\r\n\r\n")[2])
    names = {name.lower(): value for name, value in seen["headers"]}
    assert names["fsc-authorization"] == setup.tokens["valid"]
    assert names["fsc-transaction-id"] == transaction
    assert "fsc-grant-hash" not in names  # not the inway's to validate: not passed on
    assert names["x-public"] == "yes"
    for gone in (
        "x-private",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
        "x-forwarded-for",
        "forwarded",
        "x-forwarded-client-cert",
        "x-real-ip",
        "x-ssl-client-cert",
    ):
        assert gone not in names, gone
    assert names.get("connection", "keep-alive").lower() in ("keep-alive", "close")

    head = answered["received"].partition("\r\n\r\n")[0].lower()
    assert head.startswith("http/1.1 200 "), answered
    lines = head.split("\r\n")[1:]
    response = {line.partition(":")[0] for line in lines}
    assert "sluis-service-fsc-backend-named: kept" in lines  # the service's, renamed
    assert "fsc-backend-named" not in response
    assert "x-backend-public: yes" in lines
    for gone in ("x-backend-private", "keep-alive", "proxy-authenticate", "upgrade"):
        assert gone not in response, gone
    assert not any(line.startswith("connection:") and "x-backend" in line for line in lines)


def test_a_peer_cannot_speak_for_anyone_and_a_service_not_for_the_inway(setup: Setup) -> None:
    """The forwarding policy (docs/inway.md) at a real inway, with a peer's raw bytes."""
    transaction = _txid()
    extra = "".join(f"{name}: forged\r\n" for name in FORGED)
    extra += "X-Remote-User: alice\r\nX-Public: yes\r\n"  # X-Remote-User: pass_headers
    request = _raw_request(setup, "GET", "/headers", transaction=transaction, extra=extra)
    forged = _raw_request(setup, "GET", "/status/401")
    echoed, answered = setup.raw([[{"send": request}], [{"send": forged}]])

    assert echoed["received"].startswith("HTTP/1.1 200 "), echoed
    seen = json.loads(echoed["received"].partition("\r\n\r\n")[2])
    names = {name.lower(): value for name, value in seen["headers"]}
    for gone in FORGED:
        assert gone.lower() not in names, gone
    assert [n for n in names if n.startswith("fsc-")] == ["fsc-authorization", "fsc-transaction-id"]
    assert names["fsc-transaction-id"] == transaction
    assert names["x-remote-user"] == "alice"
    assert names["x-public"] == "yes"

    # The service answers 401 with an Fsc-Error-Code of its own: not the inway's error.
    head = answered["received"].partition("\r\n\r\n")[0].lower()
    assert head.startswith("http/1.1 401 "), answered
    lines = head.split("\r\n")[1:]
    assert "sluis-service-fsc-error-code: service_own_error" in lines
    assert not any(line.startswith("fsc-error-code:") for line in lines)


# -- the backend stops reading ------------------------------------------------------------------


def test_a_backend_that_stops_reading_the_upload_is_given_up_after_the_write_timeout(
    setup: Setup,
) -> None:
    stuck = setup.stuck
    fsc = {"Fsc-Authorization": setup.tokens[STUCK], "Fsc-Transaction-Id": _txid()}
    upload = {"method": "POST", "path": "/upload", "headers": fsc, "upload_mib": 64}
    fine = {
        "method": "GET",
        "path": "/after",
        "headers": {"Fsc-Authorization": setup.tokens["valid"], "Fsc-Transaction-Id": _txid()},
    }
    given_up, after = setup.call([upload, fine])
    stuck.release.set()  # now it reads: what is left of the inway's connection?

    assert _fsc_error(given_up) == (502, "ERROR_CODE_SERVICE_UNREACHABLE")
    assert "timed out sending the request body" in json.loads(given_up["body"])["message"]
    assert WRITE_TIMEOUT <= given_up["elapsed"] < WRITE_TIMEOUT + 8, given_up["elapsed"]
    assert after["status"] == 200  # the same connection, the inway still serving
    deadline = time.monotonic() + 15
    while not stuck.drained and time.monotonic() < deadline:
        time.sleep(0.05)
    ((size, eof),) = stuck.drained
    assert eof, "the inway still holds the connection to the stuck backend"
    assert size < 64 * MIB  # it never got the whole body
