"""Helpers for the controller tests: a controller in-process, on a real Manager service.

The Manager service is Peer B's (the provider) from the Manager API tests, with software
signers and the in-memory test CA (tests only: production signs in the HSM) and its clock at
``contracttest.NOW``. Contracts reach it the way they reach a running Manager: Peer C (the
directory) accepts B's publication and Peer A proposes connections, each signed with that
peer's own key and received through ``ManagerService.receive_*``. The controller's own store,
the transaction log and the certificate files are real files in a temporary directory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import falcon.testing
from apitest import address_of, hash_of, make_service, pem, sign
from contracttest import NOW, OIN_A, OIN_B, OIN_C, Group
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from appliance.config import ControllerSettings, SluisConfig, TlsSettings
from appliance.controller.app import Controller, build_app
from appliance.controller.auth import CSRF_HEADER, SESSION_COOKIE, Authenticator
from appliance.controller.certificates import CertificateStatus
from appliance.controller.health import HealthProber, Target
from appliance.controller.roles import Role
from appliance.controller.store import AuditEntry, ControllerStore
from appliance.controller.transactions import TransactionReader
from appliance.controller.views import ManagerViews
from appliance.demo.group import Member, MemberPlan, provision_group
from appliance.hsm.keys import ObjectInfo
from appliance.hsm.settings import HsmSettings
from appliance.manager.contracts.signatures import SignatureType
from appliance.manager.proposals import connection_content
from appliance.manager.service import ManagerService
from appliance.pki.ca import DemoCA
from appliance.tls.peer import PeerIdentity
from appliance.txlog.record import Destination, Direction, LogRecord, Source, new_transaction_id
from appliance.txlog.store import TransactionLog

SERVICE = "basisregistratie"
PASSWORDS = {role: f"correct horse {role.value} staple" for role in Role}
_counter = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}"


def identity(group: Group, oin: str) -> PeerIdentity:
    return PeerIdentity.from_der(group[oin].certificate.public_bytes(Encoding.DER))


def fake_token_listing() -> list[ObjectInfo]:
    return [
        ObjectInfo("private-key", "sluis-organisation", "01", "ec-p256", True, False),
        ObjectInfo("public-key", "sluis-organisation", "01", "ec-p256"),
    ]


def write_tls_files(group: Group, oin: str, root: Path) -> TlsSettings:
    root.mkdir(parents=True, exist_ok=True)
    chain, anchors, crls = root / "chain.pem", root / "anchors.pem", root / "crls.pem"
    chain.write_text(pem(group[oin].chain))
    anchors.write_text(pem(group.ca.anchors))
    crls.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in group.ca.crls()))
    return TlsSettings(
        certificate_chain=chain,
        key_reference=root / "key.pem",
        trust_anchors=anchors,
        crls=crls,
        openssl_conf=root / "openssl.cnf",
    )


@dataclass
class Env:
    """Peer B's controller and the peers around it."""

    group: Group
    service: ManagerService
    controller: Controller
    client: falcon.testing.TestClient
    root: Path
    sessions: dict[Role, tuple[str, str]] = field(default_factory=dict)  # cookie, CSRF
    tokens: dict[Role, str] = field(default_factory=dict)

    @property
    def store(self) -> ControllerStore:
        return self.controller.auth.store

    # -- contracts from the other peers ---------------------------------------------------

    def connection_from_a(self, service: str = SERVICE) -> str:
        """Peer A asks for a connection to B's ``service``; returns the content hash."""
        content = connection_content(
            group_id=self.service.settings.group_id,
            service_peer_id=OIN_B,
            service_name=service,
            outway_peer_id=OIN_A,
            outway_public_key_thumbprint=self.group[OIN_A].public_key_thumbprint,
            now=NOW,
            days=30,
        )
        asyncio.run(
            self.service.receive_contract(
                content,
                sign(content, self.group[OIN_A]),
                identity(self.group, OIN_A),
                address_of(OIN_A),
            )
        )
        return hash_of(content)

    def directory_accepts(self, content_hash: str) -> None:
        content = self.service.get(content_hash).content
        asyncio.run(
            self.service.receive_signature(
                content_hash,
                SignatureType.ACCEPT,
                content,
                sign(content, self.group[OIN_C]),
                identity(self.group, OIN_C),
                address_of(OIN_C),
            )
        )

    def published(self, name: str) -> str:
        """B's service ``name``, published and accepted by the directory."""
        contract = self.controller.manager.publish(name, "PROTOCOL_TCP_HTTP_1.1", 30)
        self.directory_accepts(contract.hash)
        assert self.service.get(contract.hash).state == "valid"
        return contract.hash

    # -- requests -------------------------------------------------------------------------

    def login(self, role: Role) -> tuple[str, str]:
        result = self.client.simulate_post(
            "/api/v1/session",
            json={"username": role.value, "password": PASSWORDS[role]},
        )
        assert result.status_code == 201, result.text
        return result.cookies[SESSION_COOKIE].value, result.json["csrf_token"]

    def as_role(self, role: Role | None, *, csrf: bool = True) -> dict[str, Any]:
        """simulate_* keyword arguments for a logged-in ``role`` (None: anonymous)."""
        if role is None:
            return {}
        if role not in self.sessions:
            self.sessions[role] = self.login(role)
        cookie, token = self.sessions[role]
        kwargs: dict[str, Any] = {"cookies": {SESSION_COOKIE: cookie}}
        if csrf:
            kwargs["headers"] = {CSRF_HEADER: token}
        return kwargs

    def bearer(self, role: Role) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def last_audit(self) -> Mapping[str, Any]:
        entries, _ = self.store.query_audit(limit=1)
        return entries[0].as_api()


def write_transactions(url: str, records: list[LogRecord]) -> None:
    async def write() -> None:
        log = TransactionLog.open(url)
        try:
            for record in records:
                await log.write(record)
        finally:
            await log.aclose()

    # In a thread of its own: a caller may have an event loop running (Playwright's).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, write()).result()


def sample_records(
    grant_hash: str,
    start: datetime,
    count: int,
    *,
    consumer: str = OIN_A,
    provider: str = OIN_B,
    other: str = OIN_C,
) -> list[LogRecord]:
    """``count`` incoming requests from A to B's service, one a minute from ``start``, and
    one outgoing request from B to C."""
    records = [
        LogRecord(
            transaction_id=new_transaction_id(
                int((start + timedelta(minutes=i)).timestamp() * 1000)
            ),
            direction=Direction.INCOMING,
            grant_hash=grant_hash,
            service_name=SERVICE,
            source=Source(consumer),
            destination=Destination(provider),
            created_at=start + timedelta(minutes=i),
        )
        for i in range(count)
    ]
    records.append(
        LogRecord(
            transaction_id=str(uuid.uuid4()),
            direction=Direction.OUTGOING,
            grant_hash=grant_hash,
            service_name="kadaster",
            source=Source(provider),
            destination=Destination(other),
            created_at=start + timedelta(minutes=count),
        )
    )
    return records


@contextmanager
def controller_env(
    group: Group,
    crls: list[x509.CertificateRevocationList],
    root: Path,
    *,
    settings: ControllerSettings | None = None,
) -> Iterator[Env]:
    settings = settings or ControllerSettings(database=f"sqlite:///{root / 'controller.db'}")
    service = make_service(group, OIN_B, root / "manager.db", crls=crls)
    tls = write_tls_files(group, OIN_B, root / "tls")
    config = SluisConfig(
        hsm=HsmSettings(token_label="test"), tls=tls, manager=service.settings, controller=settings
    )
    store = ControllerStore.open(settings.database)
    txlog = f"sqlite:///{root / 'txlog.db'}"
    write_transactions(txlog, [])
    controller = Controller(
        config=config,
        settings=settings,
        auth=Authenticator(store, settings),
        manager=ManagerViews(service, (f"{SERVICE}=http://127.0.0.1:1/api",)),
        transactions=TransactionReader.open(txlog),
        certificates=CertificateStatus(config, fake_token_listing),
        health=HealthProber([Target("outway", "http://127.0.0.1:9")], timeout=1),
    )
    env = Env(group, service, controller, falcon.testing.TestClient(build_app(controller)), root)
    for role in Role:
        controller.auth.create_user(role.value, role, PASSWORDS[role])
        env.tokens[role], _ = controller.auth.create_token(f"{role.value} robot", role, "test")
    try:
        yield env
    finally:
        controller.close()
        service.store.close()


def lone_member(root: Path, plan: MemberPlan, group_id: str) -> Member:
    """One appliance, its own directory, with its key in a SoftHSM token (for a controller
    process): a Group of one, issued by a demo CA whose CRL server is never asked."""
    ca = DemoCA.create(root / "ca", crl_base_url="http://127.0.0.1:1/crl")
    return provision_group(
        ca,
        root,
        (plan,),
        group_id=group_id,
        database=lambda name: f"sqlite:///{root / name / 'manager.db'}",
        directory=plan.name,
    )[plan.name]


def audit_entries(database: str, action: str) -> list[AuditEntry]:
    """The audit log of a controller process, newest first (``action`` as the API filters)."""
    store = ControllerStore.open(database, migrate_schema=False)
    try:
        entries, _ = store.query_audit(action=action, limit=1000)
    finally:
        store.close()
    return entries


__all__ = ["NOW", "UTC"]
