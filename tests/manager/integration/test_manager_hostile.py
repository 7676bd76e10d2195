"""A hostile or careless peer against a real Manager process (gunicorn, mutual TLS, the key in
SoftHSM): oversized and slow bodies (the worker's memory stays flat), malformed input (never a
5xx, always the FSC format), Manager addresses that point elsewhere, token requests for other
peers' grants, signatures naming an unknown hash algorithm, and the extensions announced."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import pytest
from cryptography import x509
from hostilepeer import HostilePeer, Response, connection_data, content, now, zeros
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from managergroup import GROUP_ID, Member, plan

from appliance.demo.gateways import rewrite_config
from appliance.demo.processes import start_component
from appliance.manager.contracts.hashing import content_hash, grant_hashes
from appliance.manager.contracts.model import Contract
from appliance.manager.service import NO_GRANT
from appliance.manager.storage import ManagerStore
from appliance.pki.ca import DemoCA
from appliance.tls.peer import public_key_thumbprint

pytestmark = pytest.mark.slow

MB = 1024 * 1024
HUGE = 200 * MB
OIN_T, OIN_U = "00000001000000000901", "00000001000000000902"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# Worker growth allowed after every oversized body; a body read whole is 200 MB and more.
RSS_SLACK = 40 * MB


@dataclass
class Setup:
    b: Member
    t: HostilePeer  # a peer of the Group with a software key: the tests write its bytes
    u: HostilePeer

    def json_headers(self, peer: HostilePeer | None = None) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "Fsc-Manager-Address": (peer or self.t).address(),
        }


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("hostile")
    ca = DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
    b = plan(ca, root, lambda name: f"sqlite:///{root / name / 'manager.db'}")["b"]
    t = HostilePeer.issue(
        ca,
        root / "t",
        OIN_T,
        "Organisation t",
        ("t.sluis.test", "meta.t.sluis.test", "lo.t.sluis.test"),
    )
    u = HostilePeer.issue(ca, root / "u", OIN_U, "Organisation u", ("u.sluis.test",))
    assert b.config.manager is not None
    # Names t's certificate carries, resolved by b to the cloud metadata address and to
    # loopback (which the demo and test Groups allow, as every Manager runs on 127.0.0.1).
    rewrite_config(
        b,
        resolve=(
            *b.config.manager.resolve,
            "meta.t.sluis.test:8443=169.254.169.254:8443",
            "lo.t.sluis.test:8443=127.0.0.1:8443",
        ),
    )
    assert b.config.manager.allow_loopback_peer_addresses
    b.manager = start_component(
        "manager-b", b.config_path, "manager", port=b.port, workers=2, log_dir=root / "logs"
    )
    t.known_to(b)
    u.known_to(b)
    try:
        yield Setup(b, t, u)
    finally:
        b.manager.stop()


def assert_fsc(response: Response, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, (response.status, response.text())
    assert response.headers.get("fsc-error-code") == code, response.headers
    assert response.headers.get("content-type", "").startswith("application/json")
    body: dict[str, Any] = json.loads(response.body)
    assert body == {"message": body["message"], "domain": "ERROR_DOMAIN_MANAGER", "code": code}
    return body


def b_leaf(b: Member) -> x509.Certificate:
    return x509.load_pem_x509_certificates(b.config.tls.certificate_chain.read_bytes())[0]


def connection_content(setup: Setup, *, service: str = "hostile-svc") -> dict[str, Any]:
    """t offers ``service``; b's outway (b's own key) may call it."""
    current = int(now().timestamp())
    grant = connection_data(
        outway=setup.b.oin,
        service_peer=OIN_T,
        name=service,
        thumbprint=public_key_thumbprint(b_leaf(setup.b)),
    )
    return content(
        grant,
        iv=str(uuid.uuid4()),
        group_id=GROUP_ID,
        not_before=current - 60,
        not_after=current + 30 * 86_400,
        created_at=current - 60,
    )


def submit(setup: Setup, body: dict[str, Any]) -> Response:
    return setup.t.request(
        setup.b,
        "POST",
        "/v1/contracts",
        headers=setup.json_headers(),
        body=json.dumps(body).encode(),
    )


# -- (3) bodies are capped while they stream in; the worker's memory stays flat -----------


def _workers(b: Member) -> list[psutil.Process]:
    assert b.manager is not None
    return psutil.Process(b.manager.process.pid).children(recursive=True)


def _rss(b: Member) -> dict[int, int]:
    return {p.pid: p.memory_info().rss for p in _workers(b)}


def test_oversized_bodies_are_refused_while_they_stream_and_memory_stays_flat(
    setup: Setup,
) -> None:
    b, t = setup.b, setup.t
    before = _rss(b)
    cases = [
        # (path, headers, body, pause): a declared 200 MB form, the same chunked without a
        # length, an absurd length with a body that trickles in, and the same for JSON.
        ("/v1/token", {**FORM, "Content-Length": str(HUGE)}, zeros(HUGE), 0.0),
        ("/v1/token", FORM, zeros(HUGE), 0.0),
        ("/v1/token", {**FORM, "Content-Length": str(10**12)}, zeros(64 * 1024, 1024), 0.05),
        ("/v1/contracts", setup.json_headers(), zeros(HUGE), 0.0),
        (
            "/v1/contracts",
            {**setup.json_headers(), "Content-Length": str(10**12)},
            zeros(64 * 1024, 1024),
            0.05,
        ),
    ]
    answers = []
    for path, headers, body, pause in cases:
        started = time.monotonic()
        response = t.request(b, "POST", path, headers=headers, body=body, pause=pause, timeout=20)
        answers.append((path, response, time.monotonic() - started))
    after = _rss(b)
    # The figures docs/manager.md records (run with -s to see them).
    print(
        "\nworker RSS (MB) before -> after oversized bodies:",
        ", ".join(f"{before.get(pid, 0) / MB:.0f} -> {rss / MB:.0f}" for pid, rss in after.items()),
    )
    print("answered (s):", ", ".join(f"{path} {took:.2f}" for path, _, took in answers))
    for path, response, took in answers:
        assert_fsc(response, 413, "ERROR_CODE_REQUEST_TOO_LARGE")
        assert response.headers.get("connection") == "close"
        # Refused long before the body was through: the slow ones within seconds.
        assert response.sent < 64 * MB, (path, response.sent)
        assert took < 20, (path, took)
    assert set(after) == set(before), "a worker died"
    growth = {pid: after[pid] - before[pid] for pid in after}
    assert max(growth.values()) < RSS_SLACK, growth


def test_bodies_within_the_limits_are_still_read(setup: Setup) -> None:
    # A form just under the limit reaches the OAuth checks (an unknown grant), chunked too.
    scope = "$1$3$" + "A" * 86
    form = f"grant_type=client_credentials&client_id={OIN_T}&scope={scope}".encode()
    for body in (form, iter([form[:10], form[10:]])):
        response = setup.t.request(setup.b, "POST", "/v1/token", headers=FORM, body=body)
        assert response.status == 400, response.text()
        assert json.loads(response.body)["error"] == "invalid_grant"


# -- (4) malformed input: 4xx in the FSC format, never a 5xx -------------------------------


def test_falcons_own_answers_are_in_the_fsc_format(setup: Setup) -> None:
    b, t = setup.b, setup.t
    assert_fsc(t.request(b, "GET", "/v1/no-such-thing"), 404, "ERROR_CODE_NOT_FOUND")
    assert_fsc(t.request(b, "GET", "/"), 404, "ERROR_CODE_NOT_FOUND")
    response = t.request(b, "DELETE", "/v1/contracts")
    assert_fsc(response, 405, "ERROR_CODE_METHOD_NOT_ALLOWED")
    assert "allow" in response.headers
    assert_fsc(t.request(b, "GET", "/v1/token"), 405, "ERROR_CODE_METHOD_NOT_ALLOWED")


@pytest.mark.parametrize("depth", [50_000, 2_000, 150])
def test_deeply_nested_json_is_a_bad_request(setup: Setup, depth: int) -> None:
    nested = b"[" * depth + b"]" * depth
    body = b'{"contract_content": ' + nested + b', "signature": "x.y.z"}'
    response = setup.t.request(
        setup.b, "POST", "/v1/contracts", headers=setup.json_headers(), body=body
    )
    assert response.status in (400, 422), response.text()
    assert_fsc(response, response.status, response.headers.get("fsc-error-code", "?"))


_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    path=st.sampled_from(
        ["/v1/contracts", "/v1/announce", "/v1/token", "/v1/peers", "/v1/contracts/x/accept"]
    )
    | st.from_regex(r"/v1/[a-z%0-9./]{0,30}", fullmatch=True),
    address=st.sampled_from(["https://t.sluis.test:8443", "https://[::1]:1", "x"]) | _text,
    body=_json,
)
def test_generated_requests_never_get_a_5xx(
    setup: Setup, method: str, path: str, address: str, body: Any
) -> None:
    headers = {"Content-Type": "application/json"}
    if address.isprintable() and address.isascii():
        headers["Fsc-Manager-Address"] = address
    response = setup.t.request(
        setup.b, method, path, headers=headers, body=json.dumps(body).encode()
    )
    assert response.status < 500, response.text()
    if response.status >= 400 and not (path == "/v1/token" and response.status == 400):
        assert_fsc(response, response.status, response.headers.get("fsc-error-code", "?"))


# -- (8) a peer's Manager address --------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "https://169.254.169.254:443",  # an IP literal (the cloud metadata service)
        "https://127.0.0.1:8443",
        "https://[::1]:8443",
        "http://t.sluis.test:8443",  # not https
        "https://u.sluis.test:8443",  # a name t's certificate does not carry
        "https://localhost:8443",
        "https://meta.t.sluis.test:8443",  # t's name, but it resolves to link-local
    ],
)
def test_announce_refuses_addresses_that_are_no_peers_manager(setup: Setup, address: str) -> None:
    b, t = setup.b, setup.t
    response = t.request(b, "PUT", "/v1/announce", headers={"Fsc-Manager-Address": address})
    assert_fsc(response, 400, "ERROR_CODE_REQUEST_INVALID")
    assert b.config.manager is not None
    with ManagerStore.open(b.config.manager.database) as store:
        known = store.get_peer(OIN_T)
    assert known is None or known.manager_address != address


@pytest.mark.parametrize("name", ["t.sluis.test", "lo.t.sluis.test"])
def test_announce_takes_a_name_of_the_peers_certificate(setup: Setup, name: str) -> None:
    b, t = setup.b, setup.t
    address = t.address(name=name)
    response = t.request(b, "PUT", "/v1/announce", headers={"Fsc-Manager-Address": address})
    assert response.status == 200, response.text()
    assert b.config.manager is not None
    with ManagerStore.open(b.config.manager.database) as store:
        known = store.get_peer(OIN_T)
    assert known is not None
    assert known.manager_address == address


# -- (9) the token endpoint says nothing about other peers' grants ------------------------


def test_token_for_another_peers_grant_is_answered_as_for_no_grant(setup: Setup) -> None:
    b, t, u = setup.b, setup.t, setup.u
    offered = connection_content(setup)
    assert submit(setup, {"contract_content": offered, "signature": t.sign(offered)}).status == 201
    digest = content_hash(Contract.from_json(offered))
    assert b.sluis("contract", "accept", digest)["state"] == "valid"
    (grant,) = grant_hashes(Contract.from_json(offered))
    unknown = grant[:-4] + ("AAAA" if not grant.endswith("AAAA") else "BBBB")

    def ask(peer: HostilePeer, scope: str) -> Response:
        form = f"grant_type=client_credentials&client_id={peer.oin}&scope={scope}"
        return peer.request(b, "POST", "/v1/token", headers=FORM, body=form.encode())

    for peer in (u, t):  # an outsider, and the service's own peer: neither is the outway
        theirs, nothing = ask(peer, grant), ask(peer, unknown)
        assert theirs.status == 400
        assert json.loads(theirs.body) == {"error": "invalid_grant", "error_description": NO_GRANT}
        assert (theirs.status, theirs.body) == (nothing.status, nothing.body)
        assert b.oin not in theirs.text()


# -- (10) the specification's codes, and the extensions announced --------------------------


def _unknown_algorithm_signature(peer: HostilePeer, offered: dict[str, Any], kind: str) -> str:
    digest = content_hash(Contract.from_json(offered))
    return peer.sign_payload(
        {
            "contract_content_hash": "$2$" + digest[3:],  # hash algorithm 2 does not exist
            "type": kind,
            "signed_at": int(now().timestamp()),
        }
    )


def test_an_unknown_hash_algorithm_is_named_on_submit_and_every_signature(setup: Setup) -> None:
    b, t = setup.b, setup.t
    offered = connection_content(setup, service="hostile-hash")
    response = submit(
        setup,
        {
            "contract_content": offered,
            "signature": _unknown_algorithm_signature(t, offered, "accept"),
        },
    )
    assert_fsc(response, 422, "ERROR_CODE_UNKNOWN_HASH_ALGORITHM_HASH")
    digest = content_hash(Contract.from_json(offered))
    for kind in ("accept", "reject", "revoke"):
        response = t.request(
            b,
            "PUT",
            f"/v1/contracts/{digest}/{kind}",
            headers=setup.json_headers(),
            body=json.dumps(
                {
                    "contract_content": offered,
                    "signature": _unknown_algorithm_signature(t, offered, kind),
                }
            ).encode(),
        )
        assert_fsc(response, 422, "ERROR_CODE_UNKNOWN_HASH_ALGORITHM_HASH")


def test_peer_info_announces_the_delegation_extension(setup: Setup) -> None:
    response = setup.t.request(setup.b, "GET", "/v1/peer")
    assert response.status == 200, response.text()
    info = json.loads(response.body)
    assert info["enabled_extensions"]["EXTENSION_DELEGATION"] == "1.0.0"
