"""The data path's refusals and proxy behaviour with real processes: app -> outway -> inway.

A Group of three appliances (directory, A, B), each with its own SoftHSM token and Manager
under gunicorn; B's inway in front of a backend in this process, A's outway; contracts made
and signed through the CLI, both transaction logs durable SQLite. The application's side is
plain HTTP from this process (``http.client`` or raw bytes on a socket).

Covered here: every outway error code over real processes (and an inway error passed back
unaltered), log before forward at both gateways, fail closed when either log is made
unwritable while the gateways run, the NLX-style address, FSC headers surviving
``Connection``, hop-by-hop and identity headers, strict request parsing at the outway,
encoded path tricks, and a 1 GiB body each way streamed without being held in memory.

The tests run in file order and the last three change the Group (a second connection
contract, B's Manager stopped, the inway stopped): keep them last, in that order.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from inway.inwaytest import FORGED, EchoBackend, EchoState, generated_block, log_unwritable
from inway.raw_client import converse

from appliance.demo.gateways import Gateways, configure_gateways, rewrite_config
from appliance.demo.group import (
    Member,
    MemberPlan,
    provision_group,
    start_managers,
    state_of,
    stop_managers,
    wait_for,
)
from appliance.demo.processes import Component, start_component
from appliance.errors import SluisError
from appliance.manager.contracts.hashing import grant_hashes
from appliance.manager.contracts.model import Contract
from appliance.pki.ca import DemoCA
from appliance.pki.identity import OrganisationIdentity
from appliance.txlog.record import new_transaction_id
from appliance.txlog.store import TransactionLog

pytestmark = pytest.mark.slow

OIN_DIRECTORY, OIN_A, OIN_B = "00000001000000000500", "00000001000000000501", "00000001000000000502"
SERVICE = "basisregistratie"
PLANS = tuple(
    MemberPlan(name, OrganisationIdentity(f"Organisation {name}", oin, (f"{name}.errors.test",)))
    for name, oin in (("directory", OIN_DIRECTORY), ("a", OIN_A), ("b", OIN_B))
)
MIB = 1024 * 1024
GIB_IN_MIB = 1024


@dataclass
class Chain:
    root: Path
    members: dict[str, Member]
    gateways: Gateways
    grant: str
    backend: EchoBackend
    inway: Component
    outway: Component
    logs: dict[str, TransactionLog]  # "a": the outway's, "b": the inway's
    grants: list[str]  # every connection grant A holds for SERVICE

    @property
    def port(self) -> int:
        return self.outway.port

    def logged(self, member: str, transaction: str) -> bool:
        peer = OIN_A if member == "a" else OIN_B
        records, _ = self.logs[member].query(peer, transaction_ids=[transaction])
        return bool(records)

    def started(self) -> int:
        return self.backend.state.counts()[0]

    def records(self, member: str) -> int:
        """How many records ``member``'s log holds."""
        peer = OIN_A if member == "a" else OIN_B
        total, cursor = 0, None
        while True:
            page, cursor = self.logs[member].query(peer, cursor=cursor, limit=1000)
            total += len(page)
            if not cursor:
                return total


def _accepted(member: Member, content_hash: str) -> bool:
    try:
        member.sluis("contract", "accept", content_hash)
    except SluisError:
        return False  # not delivered yet
    return True


def _connect(chain: Chain, *, until_status: int = 200) -> str:
    """A asks B for a connection to SERVICE and B accepts; returns the new grant's hash once the
    outway answers the NLX address with ``until_status`` (it reads grants per request)."""
    a, b = chain.members["a"], chain.members["b"]
    asked = a.sluis("contract", "propose-connection", "--service-peer", OIN_B, "--service", SERVICE)
    wait_for(lambda: _accepted(b, asked["hash"]), "b to accept the connection")
    wait_for(lambda: _request(chain, "GET", _nlx())[0] == until_status, "the grant at the outway")
    grant = grant_hashes(Contract.from_json(asked["content"]))[0]
    chain.grants.append(grant)
    return grant


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("chain-errors")
    ca = DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
    members = provision_group(
        ca,
        root,
        PLANS,
        group_id="errors.test",
        database=lambda name: f"sqlite:///{root / name / 'manager.db'}",
    )
    state = EchoState()
    backend = EchoBackend(state)
    backend.release_last.set()
    gateways = configure_gateways(
        members,
        provider="b",
        consumer="a",
        service=SERVICE,
        backend_url=f"{backend.url}/api",
        root=root,
    )
    # Each log in a directory of its own, so that it alone can be made unwritable.
    txlogs = {name: root / name / "txlog" for name in ("a", "b")}
    for directory in txlogs.values():
        directory.mkdir()
    urls = {name: f"sqlite:///{directory / 'txlog.db'}" for name, directory in txlogs.items()}
    rewrite_config(
        members["b"],
        f'\n[inway]\nservices = ["{SERVICE}={backend.url}/api"]\n'
        f'address = "{gateways.inway_address}"\n'
        'transaction_log = "appliance.txlog.gateway:inway_writer"\n'
        f'pass_headers = {{{SERVICE} = "X-Remote-User"}}\n'
        f'\n[txlog]\ndatabase = "{urls["b"]}"\n',
    )
    rewrite_config(
        members["a"],
        f'\n[outway]\npass_headers = {{"{OIN_B}/{SERVICE}" = "X-Remote-User"}}\n'
        f'\n[txlog]\ndatabase = "{urls["a"]}"\n',
    )
    components: list[Component] = []
    logs: dict[str, TransactionLog] = {}
    try:
        start_managers(members, root / "logs", workers=1)
        b, directory = members["b"], members["directory"]
        published = b.sluis("contract", "propose-publication", "--service", SERVICE)
        wait_for(lambda: state_of(directory, published["hash"]) == "proposed", "directory")
        directory.sluis("contract", "accept", published["hash"])
        wait_for(lambda: state_of(b, published["hash"]) == "valid", "publication valid at b")
        logs_dir = root / "logs"
        inway = start_component(
            "inway-b", b.config_path, "inway", port=gateways.inway_port, workers=1, log_dir=logs_dir
        )
        components.append(inway)
        outway = start_component(
            "outway-a",
            members["a"].config_path,
            "outway",
            port=gateways.outway_port,
            workers=1,
            log_dir=logs_dir,
        )
        components.append(outway)
        logs = {name: TransactionLog.open(url, migrate_schema=False) for name, url in urls.items()}
        chain = Chain(root, members, gateways, "", backend, inway, outway, logs, [])
        chain.grant = _connect(chain)
        # At arrival, the backend notes whether both records were already written.
        state.lookup = lambda tx: chain.logged("a", tx) and chain.logged("b", tx)
        yield chain
    finally:
        for component in components:
            component.stop()
        stop_managers(members)
        for log in logs.values():
            log.close()
        backend.stop()


def _request(
    chain: Chain,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: Any = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", chain.port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _error(answer: tuple[int, dict[str, str], bytes], domain: str = "OUTWAY") -> tuple[int, str]:
    status, headers, body = answer
    error = json.loads(body)
    assert error["domain"] == f"ERROR_DOMAIN_{domain}", answer
    assert headers["fsc-error-code"] == error["code"], answer
    return status, error["code"]


def _raw(chain: Chain, requests: list[str], until: str = "close") -> list[dict[str, Any]]:
    plan = {"host": "127.0.0.1", "port": chain.port}
    return [
        converse(plan, {"steps": [{"send": r}], "timeout": 10, "until": until}, None)
        for r in requests
    ]


def _nlx(path: str = "/items/1") -> str:
    return f"/{OIN_B}/{SERVICE}{path}"


# -- error codes --------------------------------------------------------------------------------


def test_outway_error_codes_and_the_nlx_address(chain: Chain) -> None:
    started = chain.started()
    reused = new_transaction_id()

    ok = _request(chain, "GET", _nlx("/items/7"), {"Fsc-Transaction-Id": reused})
    assert ok[0] == 200, (ok, chain.outway.log())
    seen = json.loads(ok[2])
    assert seen["raw_path"] == "/api/items/7"
    assert seen["logged"] is True  # both records were written before the backend saw it
    assert ok[1]["fsc-transaction-id"] == reused
    made = _request(chain, "GET", _nlx())
    assert made[0] == 200
    assert uuid.UUID(made[1]["fsc-transaction-id"]).version == 7  # the outway made one

    refusals = {
        "ERROR_CODE_GRANT_NOT_FOUND by hash": (
            _request(chain, "GET", "/x", {"Fsc-Grant-Hash": "$1$3$" + "Z" * 86}),
            (404, "ERROR_CODE_GRANT_NOT_FOUND"),
        ),
        "ERROR_CODE_GRANT_NOT_FOUND by name": (
            _request(chain, "GET", f"/{OIN_B}/not-published/x"),
            (404, "ERROR_CODE_GRANT_NOT_FOUND"),
        ),
        "ERROR_CODE_INVALID_PATH without a route": (
            _request(chain, "GET", "/"),
            (400, "ERROR_CODE_INVALID_PATH"),
        ),
        "ERROR_CODE_INVALID_PATH escaping": (
            _request(chain, "GET", _nlx("/a/%2e%2e/%2e%2e/b")),
            (400, "ERROR_CODE_INVALID_PATH"),
        ),
        "ERROR_CODE_INVALID_PURPOSE": (
            _request(chain, "GET", _nlx(), {"Sluis-Data-Subject-Type": "b s n"}),
            (400, "ERROR_CODE_INVALID_PURPOSE"),
        ),
        "INVALID_LOG_RECORD_ID malformed": (
            _request(chain, "GET", _nlx(), {"Fsc-Transaction-Id": "not-a-uuid"}),
            (400, "INVALID_LOG_RECORD_ID"),
        ),
        "INVALID_LOG_RECORD_ID reused": (
            _request(chain, "GET", _nlx(), {"Fsc-Transaction-Id": reused}),
            (400, "INVALID_LOG_RECORD_ID"),
        ),
        # No pseudonymisation key on A: the data subject cannot be logged as required.
        "TRANSACTION_LOG_WRITE_ERROR without a pseudonym key": (
            _request(chain, "GET", _nlx(), {"Sluis-Data-Subject": "999993653"}),
            (500, "TRANSACTION_LOG_WRITE_ERROR"),
        ),
    }
    for name, (answer, expected) in refusals.items():
        assert _error(answer) == expected, name
        if expected[1] != "INVALID_LOG_RECORD_ID":
            assert answer[1]["fsc-transaction-id"], name  # errors carry it too
    connect_request = "CONNECT b.errors.test:443 HTTP/1.1\r\nHost: b.errors.test:443\r\n\r\n"
    (connect,) = _raw(chain, [connect_request])
    head, _, body = connect["received"].partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 405 "), connect
    assert json.loads(body)["code"] == "ERROR_CODE_METHOD_UNSUPPORTED"
    assert json.loads(body)["domain"] == "ERROR_DOMAIN_OUTWAY"
    assert "\r\nfsc-error-code: ERROR_CODE_METHOD_UNSUPPORTED" in head

    assert chain.started() == started + 2  # only the two good requests got through
    assert "Traceback" not in chain.outway.log()


def test_no_outway_log_record_no_request(chain: Chain) -> None:
    started = chain.started()
    transaction = new_transaction_id()
    with log_unwritable(chain.root / "a" / "txlog"):
        refused = _request(chain, "POST", _nlx(), {"Fsc-Transaction-Id": transaction}, b"x" * 1000)
    assert _error(refused) == (500, "TRANSACTION_LOG_WRITE_ERROR")
    assert refused[1]["fsc-transaction-id"] == transaction
    assert chain.started() == started  # neither the inway nor the backend saw anything
    assert not chain.logged("a", transaction)
    assert not chain.logged("b", transaction)

    again = _request(chain, "POST", _nlx(), {}, b"x" * 1000)
    assert again[0] == 200, again
    assert json.loads(again[2])["logged"] is True


def test_no_inway_log_record_no_request_and_the_error_passes_back_unaltered(chain: Chain) -> None:
    started = chain.started()
    transaction = new_transaction_id()
    with log_unwritable(chain.root / "b" / "txlog"):
        refused = _request(chain, "GET", _nlx(), {"Fsc-Transaction-Id": transaction})
    assert _error(refused, "INWAY") == (500, "TRANSACTION_LOG_WRITE_ERROR")
    assert chain.started() == started
    assert chain.logged("a", transaction)  # the outway logged, and sent it
    assert not chain.logged("b", transaction)  # the inway could not, and did not forward it

    again = _request(chain, "GET", _nlx(), {})
    assert again[0] == 200, again
    assert json.loads(again[2])["logged"] is True


# -- headers --------------------------------------------------------------------------------------


def test_fsc_headers_survive_connection_hop_by_hop_and_identity_headers_do_not(
    chain: Chain,
) -> None:
    headers = {
        # Connection names the grant header: the outway must still route by it.
        "Connection": "X-Private, Fsc-Grant-Hash, Fsc-Transaction-Id, Keep-Alive",
        "Fsc-Grant-Hash": chain.grant,
        "Fsc-Authorization": "forged.token.value",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "X-Private": "secret",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "X-Forwarded-For": "10.1.2.3",
        "X-Forwarded-Host": "evil.example",
        "Forwarded": "for=10.1.2.3",
        "X-Forwarded-Client-Cert": "Hash=forged;Subject=CN=someone-else",
        "X-Real-IP": "10.1.2.3",
        "X-Ssl-Client-Cert": "forged",
        "X-Public": "yes",
    }
    transaction = new_transaction_id()
    status, answer_headers, body = _request(
        chain, "GET", "/headers", {**headers, "Fsc-Transaction-Id": transaction}
    )
    assert status == 200, body
    seen = {name.lower(): value for name, value in json.loads(body)["headers"]}
    assert seen["fsc-transaction-id"] == transaction
    assert seen["fsc-authorization"].count(".") == 2
    assert seen["fsc-authorization"] != "forged.token.value"  # the outway's own token
    assert seen["x-public"] == "yes"
    for gone in (
        "fsc-grant-hash",  # for the outway only
        "x-private",
        "keep-alive",
        "te",
        "proxy-authorization",
        "x-forwarded-for",
        "x-forwarded-host",
        "forwarded",
        "x-forwarded-client-cert",
        "x-real-ip",
        "x-ssl-client-cert",
    ):
        assert gone not in seen, gone
    assert answer_headers["fsc-transaction-id"] == transaction

    status, answer_headers, body = _request(chain, "GET", _nlx("/hop"))
    assert status == 200
    assert body == b"hop"
    assert answer_headers["sluis-service-fsc-backend-named"] == "kept"  # the service's
    assert "fsc-backend-named" not in answer_headers
    assert answer_headers["x-backend-public"] == "yes"
    for gone in ("x-backend-private", "keep-alive", "proxy-authenticate", "upgrade"):
        assert gone not in answer_headers, gone


def test_the_app_cannot_speak_for_anyone_and_the_service_not_for_a_gateway(chain: Chain) -> None:
    """The forwarding policy (docs/outway.md, docs/inway.md) over app -> outway -> inway."""
    headers = dict.fromkeys(FORGED, "forged")
    status, _, body = _request(
        chain, "GET", _nlx("/headers"), {**headers, "X-Remote-User": "alice", "X-Public": "yes"}
    )
    assert status == 200, body
    seen = {name.lower(): value for name, value in json.loads(body)["headers"]}
    for gone in FORGED:
        assert gone.lower() not in seen, gone
    assert [n for n in seen if n.startswith("fsc-")] == ["fsc-authorization", "fsc-transaction-id"]
    assert seen["x-remote-user"] == "alice"  # pass_headers at both gateways
    assert seen["x-public"] == "yes"

    # A service's own Fsc-Error-Code is not a gateway's error at the application.
    status, answer_headers, body = _request(chain, "GET", _nlx("/status/401"))
    assert status == 401
    assert body == b"service says no"
    assert "fsc-error-code" not in answer_headers
    assert answer_headers["sluis-service-fsc-error-code"] == "SERVICE_OWN_ERROR"


# -- request framing and paths at the outway ------------------------------------------------------


def test_malformed_requests_never_leave_the_outway(chain: Chain) -> None:
    host = "Host: outway.local\r\n"
    post = f"POST {_nlx()} HTTP/1.1\r\n{host}"
    malformed = {
        "Content-Length with Transfer-Encoding": post
        + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "bare LF": f"GET {_nlx()} HTTP/1.1\nHost: outway.local\n\n",
        "chunk size not hex": post + "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        "bad chunk size after a good chunk": post
        + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n",
        "chunk size overflowing": post
        + "Transfer-Encoding: chunked\r\n\r\n1ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "gzip, chunked": post + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "two Host headers": f"GET {_nlx()} HTTP/1.1\r\n{host}{host}\r\n",
    }
    control = (
        post + "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    started, logged = chain.started(), chain.records("a")
    *refused, accepted = _raw(chain, [*malformed.values(), control])
    for name, answer in zip(malformed, refused, strict=True):
        assert answer["received"].startswith("HTTP/1.1 400 "), (name, answer)
        assert answer["closed"], name
    assert accepted["received"].startswith("HTTP/1.1 200 "), accepted
    assert json.loads(accepted["received"].partition("\r\n\r\n")[2])["body_size"] == 5
    assert chain.started() == started + 1  # only the control reached the backend
    assert chain.records("a") == logged + 1  # and only it was logged


def test_encoded_path_tricks_never_leave_the_outway(chain: Chain) -> None:
    escapes = [
        _nlx("/%2e%2e/%2e%2e/admin"),
        _nlx("/..%2f..%2fadmin"),
        _nlx("/%2fadmin"),
        _nlx("/a/%252e%252e/admin"),
        _nlx("/a/%252f"),
        _nlx("/a/%25%32%65%25%32%65/admin"),
        _nlx("/a/%c0%ae%c0%ae/admin"),
        _nlx("/a/%25u002e%25u002e/admin"),
        f"/{OIN_B}/{SERVICE}%2f..%2f..%2fadmin",
        f"/{OIN_B}/%2e%2e/{SERVICE}/x",
    ]
    started = chain.started()
    for path in escapes:
        status, code = _error(_request(chain, "GET", path))
        assert status == 400, path
        assert code in ("ERROR_CODE_INVALID_PATH", "ERROR_CODE_GRANT_NOT_FOUND"), path
    by_hash = _request(chain, "GET", "/x/%2e%2e/y", {"Fsc-Grant-Hash": chain.grant})
    assert _error(by_hash) == (400, "ERROR_CODE_INVALID_PATH")
    assert chain.started() == started
    status, _, body = _request(chain, "GET", _nlx("/a%20b/%2e%2e%2e/c%3Bd"))
    assert status == 200
    assert json.loads(body)["raw_path"] == "/api/a%20b/%2e%2e%2e/c%3Bd"


# -- 1 GiB each way -------------------------------------------------------------------------------


class RssSampler:
    """Samples the RSS of the gateways' worker processes while a transfer runs."""

    def __init__(self, *components: Component, interval: float = 0.05) -> None:
        self._workers = [
            worker
            for component in components
            for worker in psutil.Process(component.process.pid).children(recursive=True)
        ]
        assert len(self._workers) == len(components), "one worker per gateway"
        self.baseline = self._total()
        self.peak = self.baseline
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _total(self) -> int:
        return sum(worker.memory_info().rss for worker in self._workers)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._total())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def test_a_gibibyte_streams_each_way_without_being_held(chain: Chain) -> None:
    sent = hashlib.sha256()

    def upload() -> Iterator[bytes]:
        for index in range(GIB_IN_MIB):
            block = generated_block(index)
            sent.update(block)
            yield block

    with RssSampler(chain.outway, chain.inway) as up:
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", chain.port, timeout=300)
        conn.request("POST", _nlx("/upload"), body=upload(), encode_chunked=True)
        response = conn.getresponse()
        answer = response.read()
        conn.close()
        upload_seconds = time.monotonic() - started
    assert response.status == 200, answer
    seen = json.loads(answer)
    assert seen["body_size"] == GIB_IN_MIB * MIB
    assert seen["body_sha256"] == sent.hexdigest()

    expected = hashlib.sha256()
    for index in range(GIB_IN_MIB):
        expected.update(generated_block(index))
    received = hashlib.sha256()
    size = 0
    with RssSampler(chain.outway, chain.inway) as down:
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", chain.port, timeout=300)
        conn.request("GET", _nlx(f"/generate/{GIB_IN_MIB}"))
        response = conn.getresponse()
        while chunk := response.read(MIB):
            received.update(chunk)
            size += len(chunk)
        conn.close()
        download_seconds = time.monotonic() - started
    assert response.status == 200
    assert size == GIB_IN_MIB * MIB
    assert received.hexdigest() == expected.hexdigest()

    print(
        f"\n1 GiB up {upload_seconds:.1f} s ({GIB_IN_MIB / upload_seconds:.0f} MiB/s), "
        f"worker RSS {up.baseline / MIB:.0f} -> peak {up.peak / MIB:.0f} MiB; "
        f"down {download_seconds:.1f} s ({GIB_IN_MIB / download_seconds:.0f} MiB/s), "
        f"worker RSS {down.baseline / MIB:.0f} -> peak {down.peak / MIB:.0f} MiB"
    )
    for sampler in (up, down):
        assert sampler.growth < 200 * MIB, f"the gateways grew by {sampler.growth / MIB:.0f} MiB"


# -- changing the Group: keep these last, in this order ------------------------------------------


def test_two_grants_for_one_service_make_the_nlx_address_ambiguous(chain: Chain) -> None:
    _connect(chain, until_status=409)
    started = chain.started()
    assert _error(_request(chain, "GET", _nlx())) == (409, "ERROR_CODE_GRANT_AMBIGUOUS")
    assert chain.started() == started
    status, _, _ = _request(chain, "GET", "/items/1", {"Fsc-Grant-Hash": chain.grant})
    assert status == 200


def test_a_manager_that_is_down_is_token_unavailable(chain: Chain) -> None:
    """B's Manager stops; the second grant has no token yet (the first one's is cached)."""
    assert len(chain.grants) == 2, "runs after the test that makes the second grant"
    manager = chain.members["b"].manager
    assert manager is not None
    manager.stop()
    started = chain.started()
    answer = _request(chain, "GET", "/items/1", {"Fsc-Grant-Hash": chain.grants[1]})
    assert _error(answer) == (502, "ERROR_CODE_TOKEN_UNAVAILABLE")
    assert chain.started() == started
    # The first grant's token is still in the outway's cache: that path still works.
    status, _, _ = _request(chain, "GET", "/items/1", {"Fsc-Grant-Hash": chain.grant})
    assert status == 200


def test_an_inway_that_is_down_is_inway_unreachable(chain: Chain) -> None:
    chain.inway.stop()
    answer = _request(chain, "GET", "/items/1", {"Fsc-Grant-Hash": chain.grant})
    assert _error(answer) == (502, "ERROR_CODE_INWAY_UNREACHABLE")
