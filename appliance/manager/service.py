"""The Manager's behaviour: contracts in and out, signatures, tokens, peers, services.

The HTTP layer (``appliance.manager.api``) and the operators' CLI (``sluis contract``) both call
this class. It ties the contract rules (``appliance.manager.contracts``), the store
(``appliance.manager.storage``) and this Peer's HSM-backed signer together. Everything that has
to reach another Manager goes through the outbox in the same transaction that stores it, and
the delivery loop (``appliance.manager.delivery``) sends it, retrying with back-off: a crash or
restart on either side loses nothing.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from appliance.config import ManagerSettings
from appliance.errors import SluisError
from appliance.hsm.signer import Signer
from appliance.jcs import canonicalize
from appliance.manager.addresses import (
    AddressError,
    check_certificate_names,
    check_manager_address,
)
from appliance.manager.certificates import chains_from_jwks, jwks_document, without_roots
from appliance.manager.contracts import jose
from appliance.manager.contracts.errors import ContractError, ErrorCode
from appliance.manager.contracts.hashing import (
    check_path_hash,
    content_hash,
    find_grant,
    grant_hash,
)
from appliance.manager.contracts.model import (
    CONNECTION_GRANTS,
    Contract,
    DelegatedServicePublicationGrant,
    GrantType,
    ServicePublicationGrant,
)
from appliance.manager.contracts.signatures import (
    SignatureType,
    VerifiedSignature,
    create_signature,
    verify_signature,
)
from appliance.manager.contracts.state import ContractState, contract_state
from appliance.manager.contracts.tokens import (
    TokenError,
    authorize_token_request,
    build_access_token_claims,
    issue_access_token,
)
from appliance.manager.contracts.validation import validate_contract, validate_participants
from appliance.manager.peer_client import PeerCallError, PeerClient
from appliance.manager.storage import (
    ContractRow,
    Delivery,
    DuplicateIvError,
    GrantRow,
    ManagerStore,
    StoreTransaction,
    UnknownCursorError,
)
from appliance.tls.peer import PeerIdentity, certificate_thumbprint

log = logging.getLogger("sluis.manager")

FSC_VERSION = "1.0.0"
# Extensions every Sluis Manager implements (manager.yaml enabledExtensions): delegated
# connection and publication grants, with ``act`` and ``pdi`` in the tokens. The logging
# extension is added where a transaction log is configured (appliance.manager.app).
BUILT_IN_EXTENSIONS = {"EXTENSION_DELEGATION": "1.0.0"}
# The one answer to a token request for a grant that is not the caller's (or not there at
# all): nothing in it may tell the caller whose grant a hash is, or that it exists.
NO_GRANT = "no valid grant for this client under this scope"
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)


def utcnow() -> datetime:
    return datetime.now(UTC)


def load_crls(path: Path) -> list[x509.CertificateRevocationList]:
    return [x509.load_pem_x509_crl(block) for block in _PEM_CRL.findall(path.read_bytes())]


def load_certificates(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def _pem(chain: Iterable[x509.Certificate]) -> str:
    return "".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in chain)


def _from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class ManagerError(SluisError):
    """A local operation that cannot be done (unknown contract, not a party, ...)."""


@dataclass(frozen=True)
class ContractView:
    """A contract as the Manager API and the CLI show it."""

    content_hash: str
    content: dict[str, Any]
    signatures: dict[str, dict[str, str]]
    state: ContractState
    grant_hashes: tuple[str, ...]

    def as_api(self) -> dict[str, Any]:
        return {"content": self.content, "signatures": self.signatures}


@dataclass
class ManagerService:
    settings: ManagerSettings
    store: ManagerStore
    own_chain: list[x509.Certificate]
    trust_anchors: list[x509.Certificate]
    crls: Callable[[], list[x509.CertificateRevocationList]]
    signer: Signer
    client: PeerClient | None = None
    clock: Callable[[], datetime] = utcnow
    enabled_extensions: dict[str, str] = field(default_factory=lambda: dict(BUILT_IN_EXTENSIONS))

    def __post_init__(self) -> None:
        if self.client is not None:
            # Whoever built the client (the Manager, the CLI, the outway), the operator's
            # allowance for loopback peer addresses is this Manager's setting.
            self.client.allow_loopback = self.settings.allow_loopback_peer_addresses
        self.identity = PeerIdentity.from_der(self.own_chain[0].public_bytes(Encoding.DER))
        # Our own certificate verifies our own signatures like any peer's.
        self.store.put_certificate(
            self.identity.certificate_thumbprint,
            self.identity.peer_id,
            _pem(without_roots(self.own_chain)),
            self.own_chain[0].not_valid_after_utc,
        )
        self.store.upsert_peer(
            self.identity.peer_id,
            name=self.settings.peer_name,
            manager_address=self.settings.address,
        )
        if self.settings.directory_peer_id and self.settings.directory_address:
            self.store.upsert_peer(
                self.settings.directory_peer_id, manager_address=self.settings.directory_address
            )

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id

    # ------------------------------------------------------------------ reading

    def _chain(self, thumbprint: str) -> list[x509.Certificate] | None:
        row = self.store.get_certificate(thumbprint)
        return x509.load_pem_x509_certificates(row.chain_pem.encode()) if row else None

    def _verified(self, contract: Contract, row_hash: str) -> list[VerifiedSignature]:
        """Stored signatures (each verified when it arrived) in the form the state rules take."""
        verified = []
        for sig in self.store.signatures(row_hash):
            cert = self.store.get_certificate(sig.certificate_thumbprint)
            if cert is None:
                continue
            verified.append(
                VerifiedSignature(
                    peer_id=sig.peer_id,
                    type=SignatureType(sig.signature_type),
                    signed_at=sig.signed_at,
                    certificate_thumbprint=sig.certificate_thumbprint,
                    jws=sig.jws,
                    contract_content_hash=row_hash,
                    certificate_not_after=cert.not_after,
                )
            )
        return verified

    def view(self, row: ContractRow) -> ContractView:
        contract = Contract.from_json(json.loads(row.content_json))
        signatures: dict[str, dict[str, str]] = {"accept": {}, "reject": {}, "revoke": {}}
        for sig in self.store.signatures(row.content_hash):
            signatures[sig.signature_type][sig.peer_id] = sig.jws
        state = contract_state(contract, self._verified(contract, row.content_hash), self.clock())
        return ContractView(
            row.content_hash,
            contract.to_json(),
            signatures,
            state,
            tuple(g.grant_hash for g in row.grants),
        )

    def get(self, content_hash: str) -> ContractView:
        row = self.store.get_contract(content_hash)
        if row is None:
            raise ManagerError(f"no contract {content_hash}")
        return self.view(row)

    def contracts(
        self,
        *,
        peer_id: str | None = None,
        grant_type: str | None = None,
        grant_hashes: Sequence[str] | None = None,
        cursor: str | None = None,
        limit: int = 100,
        descending: bool = True,
    ) -> tuple[list[ContractView], str]:
        if cursor is not None and peer_id is not None:
            # A cursor must be one of the caller's own contracts: otherwise it would tell any
            # peer whether some content hash exists here.
            anchor = self.store.get_contract(cursor)
            if anchor is None or peer_id not in anchor.peer_ids:
                raise UnknownCursorError(cursor)
        rows = self.store.list_contracts(
            peer_id=peer_id,
            grant_type=grant_type,
            grant_hashes=grant_hashes,
            after=cursor,
            limit=limit,
            descending=descending,
        )
        next_cursor = rows[-1].content_hash if len(rows) == limit else ""
        return [self.view(r) for r in rows], next_cursor

    # ------------------------------------------------------------------ local actions

    def _sign(self, contract: Contract, kind: SignatureType) -> str:
        return create_signature(
            contract, kind, self.signer, self.own_chain[0].public_bytes(Encoding.DER), self.clock()
        )

    def _others(self, contract: Contract) -> list[str]:
        return sorted(contract.peer_ids() - {self.peer_id})

    def _store_contract(
        self, tx: StoreTransaction, contract: Contract, deliveries: Sequence[Delivery] = ()
    ) -> str:
        digest = content_hash(contract)
        if tx.get_contract(digest) is not None:
            return digest
        grants = [
            GrantRow.from_data(grant_hash(contract, grant), canonicalize(grant.to_json()).decode())
            for grant in contract.grants
        ]
        try:
            self._put(tx, contract, digest, grants, deliveries)
        except DuplicateIvError as exc:
            raise ContractError(ErrorCode.CONTRACT_INVALID, str(exc)) from None
        return digest

    def _put(
        self,
        tx: StoreTransaction,
        contract: Contract,
        digest: str,
        grants: Sequence[GrantRow],
        deliveries: Sequence[Delivery],
    ) -> None:
        tx.put_contract_and_enqueue(
            digest,
            contract.group_id,
            str(contract.iv),
            contract.hash_algorithm,
            _from_epoch(contract.created_at),
            _from_epoch(contract.validity.not_before),
            _from_epoch(contract.validity.not_after),
            canonicalize(contract.to_json()).decode(),
            grants,
            deliveries,
            now=self.clock(),
        )

    def propose(self, content: dict[str, Any]) -> ContractView:
        """Validate, sign (accept) and store a new contract; queue it for the other peers."""
        contract = Contract.from_json(content)
        self._validate(contract)
        if self.peer_id not in contract.peer_ids():
            raise ContractError(
                ErrorCode.PEER_NOT_PART_OF_CONTRACT,
                f"this peer {self.peer_id} is not on the contract",
            )
        signature = self._sign(contract, SignatureType.ACCEPT)
        payload = json.dumps({"content": contract.to_json(), "signature": signature})
        deliveries = [Delivery(peer, "contract", payload) for peer in self._others(contract)]
        with self.store.transaction() as tx:
            digest = self._store_contract(tx, contract, deliveries)
            self._record_signature(tx, digest, self.peer_id, SignatureType.ACCEPT, signature)
        log.info("proposed contract %s to %s", digest, ", ".join(self._others(contract)))
        return self.get(digest)

    def sign(self, digest: str, kind: SignatureType) -> ContractView:
        """Accept, reject or revoke a stored contract; queue the signature for the other peers."""
        view = self.get(digest)
        contract = Contract.from_json(view.content)
        if self.peer_id not in contract.peer_ids():
            raise ManagerError(f"this peer is not on contract {digest}")
        if kind == SignatureType.ACCEPT and view.state in (
            ContractState.REJECTED,
            ContractState.REVOKED,
        ):
            raise ManagerError(f"contract {digest} is {view.state}; it cannot be accepted")
        signature = self._sign(contract, kind)
        payload = json.dumps(
            {"content": contract.to_json(), "signature": signature, "type": str(kind)}
        )
        deliveries = [Delivery(peer, "signature", payload) for peer in self._others(contract)]
        with self.store.transaction() as tx:
            self._record_signature(tx, digest, self.peer_id, kind, signature, deliveries)
        log.info("%s contract %s", kind, digest)
        self._after_signature(contract, digest)
        return self.get(digest)

    def _record_signature(
        self,
        tx: StoreTransaction,
        digest: str,
        peer_id: str,
        kind: SignatureType,
        jws: str,
        deliveries: Sequence[Delivery] = (),
    ) -> None:
        parsed = jose.parse_compact(jws)
        thumbprint = str(parsed.header["x5t#S256"])
        signed_at = _from_epoch(int(json.loads(parsed.payload)["signed_at"]))
        tx.add_signature_and_enqueue(
            digest,
            peer_id,
            kind.value,
            jws,
            signed_at,
            thumbprint,
            deliveries,
            now=self.clock(),
        )

    # ------------------------------------------------------------------ from peers

    def _validate(self, contract: Contract) -> None:
        # The unique iv is checked when storing (DuplicateIvError, in the same transaction).
        validate_contract(contract, group_id=self.settings.group_id, now=self.clock())

    async def _chain_from_peer(self, thumbprint: str, address: str | None) -> None:
        """Make sure the certificate named by a signature is known, asking its Manager."""
        if self.store.get_certificate(thumbprint) is not None or not address or not self.client:
            return
        try:
            document = await self.client.jwks(address)
        except PeerCallError as exc:
            log.warning("cannot fetch certificates from %s: %s", address, exc)
            if exc.permanent:
                return  # the signature check then refuses: the certificate stays unknown
            # Unreachable or overloaded now: the sender should retry soon, not take a refusal.
            raise ContractError(
                ErrorCode.SIGNER_CERTIFICATE_UNAVAILABLE,
                f"certificate {thumbprint} is unknown here and {address} could not be asked for "
                f"it now ({exc}); try again",
                status=503,
            ) from None
        for found, chain in chains_from_jwks(document).items():
            leaf = PeerIdentity.from_der(chain[0].public_bytes(Encoding.DER))
            self.store.put_certificate(
                found, leaf.peer_id, _pem(chain), chain[0].not_valid_after_utc
            )

    async def _verify_from(
        self,
        contract: Contract,
        jws: str,
        kind: SignatureType,
        sender: PeerIdentity,
        address: str | None,
    ) -> VerifiedSignature:
        try:
            thumbprint = jose.parse_compact(jws).header.get("x5t#S256")
        except jose.JoseError:
            thumbprint = None
        if isinstance(thumbprint, str):
            await self._chain_from_peer(thumbprint, address)
        return verify_signature(
            jws,
            contract,
            expected_type=kind,
            expected_peer_id=sender.peer_id,
            chain_for_thumbprint=self._chain,
            trust_anchors=self.trust_anchors,
            crls=self.crls(),
            now=self.clock(),
        )

    def _remember_peer(self, sender: PeerIdentity, address: str | None) -> None:
        checked = check_manager_address(address) if address else None
        self.store.upsert_peer(sender.peer_id, name=sender.organisation, manager_address=checked)

    async def receive_contract(
        self, content: Any, signature: str, sender: PeerIdentity, address: str | None
    ) -> None:
        """POST /contracts: a peer offers a contract with its accept signature."""
        contract = Contract.from_json(content)
        self._validate(contract)
        validate_participants(
            contract, submitting_peer_id=sender.peer_id, receiving_peer_id=self.peer_id
        )
        self._check_roles(contract, sender)
        verified = await self._verify_from(
            contract, signature, SignatureType.ACCEPT, sender, address
        )
        with self.store.transaction() as tx:
            digest = self._store_contract(tx, contract)
            self._record_signature(tx, digest, sender.peer_id, SignatureType.ACCEPT, verified.jws)
        self._remember_peer(sender, address)
        log.info("received contract %s from %s", digest, sender.peer_id)
        # The submitter's accept may be the last one needed (signatures arrived first).
        self._after_signature(contract, digest)

    async def receive_signature(
        self,
        path_hash: str,
        kind: SignatureType,
        content: Any,
        signature: str,
        sender: PeerIdentity,
        address: str | None,
    ) -> None:
        """PUT /contracts/{hash}/{accept|reject|revoke}: a peer signs a contract."""
        contract = Contract.from_json(content)
        check_path_hash(contract, path_hash)
        validate_participants(
            contract, submitting_peer_id=sender.peer_id, receiving_peer_id=self.peer_id
        )
        digest = content_hash(contract)
        known = self.store.get_contract(digest) is not None
        if not known:
            # Stored now: the same checks as POST /contracts, or a PUT would bypass them.
            self._validate(contract)
            self._check_roles(contract, sender)
        verified = await self._verify_from(contract, signature, kind, sender, address)
        with self.store.transaction() as tx:
            if not known:
                self._store_contract(tx, contract)
            self._record_signature(tx, digest, sender.peer_id, kind, verified.jws)
        self._remember_peer(sender, address)
        log.info("received %s of contract %s from %s", kind, digest, sender.peer_id)
        self._after_signature(contract, digest)

    def _check_roles(self, contract: Contract, sender: PeerIdentity) -> None:
        """Grant rules that name who may offer a contract to whom (core "Contract validation")."""
        for grant in contract.grants:
            if isinstance(grant, ServicePublicationGrant):
                if (
                    grant.directory.peer_id == self.peer_id
                    and grant.service.peer_id != sender.peer_id
                ):
                    raise ContractError(
                        ErrorCode.PEER_NOT_PART_OF_CONTRACT,
                        "only the peer offering the service may offer its publication",
                    )
            elif (
                isinstance(grant, CONNECTION_GRANTS)
                and grant.service.peer_id == self.peer_id
                and grant.service.name not in self.offered_services()
            ):
                raise ContractError(
                    ErrorCode.CONTRACT_INVALID,
                    f"this peer offers no service {grant.service.name!r}",
                )

    def _after_signature(self, contract: Contract, digest: str) -> None:
        """Keep the service listing in step with publication contracts."""
        if not contract.publication_grants():
            return
        state = self.get(digest).state
        self.store.remove_services_of_contract(digest)
        if state != ContractState.VALID:
            return
        for grant in contract.publication_grants():
            service = grant.service
            self.store.put_service(
                service.peer_id,
                service.name,
                digest,
                str(service.protocol),
                delegator_peer_id=(
                    grant.delegator.peer_id
                    if isinstance(grant, DelegatedServicePublicationGrant)
                    else None
                ),
            )

    # ------------------------------------------------------------------ services, peers

    def offered_services(self) -> set[str]:
        """Services this peer offers: published through a valid contract with the directory."""
        return {s.service_name for s in self.store.list_services(peer_id=self.peer_id)}

    def announce(self, sender: PeerIdentity, address: str) -> None:
        self._remember_peer(sender, address)

    async def check_peer_address(self, address: str, sender: PeerIdentity) -> str:
        """``sender``'s own Manager address, checked by every rule of
        :mod:`appliance.manager.addresses`; :class:`AddressError` if it breaks one."""
        checked = check_manager_address(address)
        check_certificate_names(checked, sender)
        if self.client is not None:
            await self.client.check_resolution(checked)
        return checked

    def peer_info(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "peer_name": self.settings.peer_name,
            "fsc_version": FSC_VERSION,
            "enabled_extensions": dict(self.enabled_extensions),
        }

    def jwks(self) -> dict[str, Any]:
        """This node's chain first, then this Peer's other current certificates in the store.

        The gateway nodes of one organisation (docs/ha.md) share one database, and each
        node's Manager puts its own certificate there at start: so whichever node holds the
        organisation's Manager address, a peer that checks a signature of any node finds that
        node's certificate here. Only chains that lead to the Group's trust anchors and are
        valid now: the store also files what other peers' JWKS claimed. Revocation is the
        verifier's check (a removed node's certificate is revoked at the CA, docs/ha.md).
        """
        now = self.clock()
        verifier = PolicyBuilder().store(Store(self.trust_anchors)).time(now)
        chains = [self.own_chain]
        for row in self.store.certificates_of(self.peer_id):
            if row.thumbprint == self.identity.certificate_thumbprint or row.not_after <= now:
                continue
            chain = x509.load_pem_x509_certificates(row.chain_pem.encode())
            try:
                verifier.build_client_verifier().verify(chain[0], chain[1:])
            except VerificationError:
                continue
            chains.append(chain)
        return jwks_document(chains)

    async def manager_address(self, peer_id: str) -> str:
        """Where another peer's Manager is: remembered, or asked from the directory."""
        row = self.store.get_peer(peer_id)
        if row and row.manager_address:
            return row.manager_address
        directory = self.settings.directory_address
        if not directory or not self.client or peer_id == self.settings.directory_peer_id:
            raise ManagerError(f"no Manager address known for peer {peer_id}")
        for peer in await self.client.peers(directory, [peer_id]):
            if peer.get("id") == peer_id and peer.get("manager_address"):
                # The same rules as for an announce; the certificate's name is checked by TLS
                # when connecting (this peer's certificate is not at hand here).
                try:
                    address = check_manager_address(str(peer["manager_address"]))
                    await self.client.check_resolution(address)
                except AddressError as exc:
                    raise ManagerError(f"the directory's address for {peer_id}: {exc}") from None
                self.store.upsert_peer(peer_id, name=peer.get("name"), manager_address=address)
                return address
        raise ManagerError(f"the directory does not know peer {peer_id}")

    # ------------------------------------------------------------------ tokens

    def issue_token(self, scope: str, client_id: str, client: PeerIdentity) -> str:
        """POST /token: an access token for a valid connection grant, bound to ``client``.

        Only the grant's own outway peer learns why it gets no token; any other caller gets
        :data:`NO_GRANT`, the same as for a hash that names no grant here.
        """
        if client_id != client.peer_id:
            raise TokenError(
                "invalid_client", "client_id is not the peer id of the client certificate"
            )
        for row in self.store.list_contracts(grant_hashes=[scope], limit=100):
            contract = Contract.from_json(json.loads(row.content_json))
            grant = find_grant(contract, scope)
            if not isinstance(grant, CONNECTION_GRANTS) or grant.outway.peer_id != client.peer_id:
                continue
            state = self.view(row).state
            if state != ContractState.VALID:
                raise TokenError("invalid_grant", f"the contract of this grant is {state}")
            authorize_token_request(
                contract, grant, issuer_peer_id=self.peer_id, client_id=client_id, client=client
            )
            if grant.service.name not in self.offered_services():
                raise TokenError("invalid_grant", "this peer no longer offers the service")
            claims = build_access_token_claims(
                contract,
                grant,
                issuer_peer_id=self.peer_id,
                inway_address=self.settings.inway_address,
                client_certificate_thumbprint=client.certificate_thumbprint,
                now=self.clock(),
                lifetime_seconds=self.settings.token_lifetime_seconds,
            )
            return issue_access_token(
                claims, self.signer, self.own_chain[0].public_bytes(Encoding.DER)
            )
        raise TokenError("invalid_grant", NO_GRANT)


def grant_type_value(name: str | None) -> str | None:
    if name is None:
        return None
    return GrantType(name).value


def thumbprint(certificate: x509.Certificate) -> str:
    return certificate_thumbprint(certificate.public_bytes(Encoding.DER))
