"""FSC contract content as manager.yaml's ``contractContent`` defines it: parsed once, immutable.

The content is kept exactly as received (member and array order included) because every Peer
hashes that content; the typed fields are a read-only view of it. Parsing enforces the schema:
types, required members, lengths and enums, and refuses members the schema does not define
(outside ``properties``), so nothing the Manager does not understand is ever signed.

Rules that have their own FSC error code (group ID, hash algorithm, public key thumbprint,
grant combinations) and the Group's rules (PeerID format) are left to :mod:`.validation`, so
the right code reaches the other Peer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar, TypeAlias
from uuid import UUID

from appliance.jcs import JcsError, JsonValue, canonicalize
from appliance.manager.contracts.errors import ContractError, ErrorCode

JsonObject: TypeAlias = Mapping[str, JsonValue]

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_INT64_MAX = 2**63 - 1


class GrantType(StrEnum):
    SERVICE_PUBLICATION = "GRANT_TYPE_SERVICE_PUBLICATION"
    SERVICE_CONNECTION = "GRANT_TYPE_SERVICE_CONNECTION"
    DELEGATED_SERVICE_CONNECTION = "GRANT_TYPE_DELEGATED_SERVICE_CONNECTION"
    DELEGATED_SERVICE_PUBLICATION = "GRANT_TYPE_DELEGATED_SERVICE_PUBLICATION"


class ServiceType(StrEnum):
    SERVICE = "SERVICE_TYPE_SERVICE"
    DELEGATED_SERVICE = "SERVICE_TYPE_DELEGATED_SERVICE"


class Protocol(StrEnum):
    HTTP_1_1 = "PROTOCOL_TCP_HTTP_1.1"
    HTTP_2 = "PROTOCOL_TCP_HTTP_2"


def freeze(value: JsonValue) -> JsonValue:
    """A deep copy no caller can change: mappings become read-only views, lists tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: freeze(member) for key, member in value.items()})
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(freeze(element) for element in value)
    return value


def thaw(value: JsonValue) -> Any:
    """A deep, mutable copy as ``json`` builds it: dicts, lists and scalars."""
    if isinstance(value, Mapping):
        return {key: thaw(member) for key, member in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [thaw(element) for element in value]
    return value


# -- the parts of a grant ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Directory:
    peer_id: str


@dataclass(frozen=True, kw_only=True)
class Delegator:
    peer_id: str


@dataclass(frozen=True, kw_only=True)
class Outway:
    peer_id: str
    public_key_thumbprint: str


@dataclass(frozen=True, kw_only=True)
class Service:
    """manager.yaml ``service``: a Service its own Peer offers."""

    peer_id: str
    name: str
    type: ClassVar[ServiceType] = ServiceType.SERVICE


@dataclass(frozen=True, kw_only=True)
class DelegatedService:
    """manager.yaml ``delegatedService``: offered by ``peer_id`` on behalf of ``delegator``."""

    peer_id: str
    name: str
    delegator: Delegator
    type: ClassVar[ServiceType] = ServiceType.DELEGATED_SERVICE


@dataclass(frozen=True, kw_only=True)
class ServicePublication:
    peer_id: str
    name: str
    protocol: Protocol


# -- grants --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _GrantBase:
    properties: JsonObject | None = field(hash=False)
    # grant.data exactly as received, for the grant hash.
    data: JsonObject = field(repr=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        """``grant.data`` as received."""
        result: dict[str, Any] = thaw(self.data)
        return result


@dataclass(frozen=True, kw_only=True)
class _PublicationBase(_GrantBase):
    directory: Directory
    service: ServicePublication


@dataclass(frozen=True, kw_only=True)
class ServicePublicationGrant(_PublicationBase):
    type: ClassVar[GrantType] = GrantType.SERVICE_PUBLICATION

    def peer_ids(self) -> tuple[str, ...]:
        """The Peers on this grant; each of them must accept (core "Signature requirements")."""
        return (self.directory.peer_id, self.service.peer_id)


@dataclass(frozen=True, kw_only=True)
class DelegatedServicePublicationGrant(_PublicationBase):
    delegator: Delegator
    type: ClassVar[GrantType] = GrantType.DELEGATED_SERVICE_PUBLICATION

    def peer_ids(self) -> tuple[str, ...]:
        return (self.directory.peer_id, self.service.peer_id, self.delegator.peer_id)


@dataclass(frozen=True, kw_only=True)
class _ConnectionBase(_GrantBase):
    outway: Outway
    service: Service | DelegatedService

    @property
    def outway_peer_id(self) -> str:
        return self.outway.peer_id

    @property
    def public_key_thumbprint(self) -> str:
        return self.outway.public_key_thumbprint

    @property
    def service_peer_id(self) -> str:
        return self.service.peer_id

    @property
    def service_name(self) -> str:
        return self.service.name

    @property
    def service_delegator_peer_id(self) -> str | None:
        """The Peer on whose behalf the Service is published (token claim ``pdi``), if any."""
        if isinstance(self.service, DelegatedService):
            return self.service.delegator.peer_id
        return None

    @property
    def delegator_peer_id(self) -> str | None:
        """The Peer on whose behalf the Outway connects (token claim ``act.sub``), if any."""
        return None

    def peer_ids(self) -> tuple[str, ...]:
        peers = [self.outway.peer_id, self.service.peer_id]
        for extra in (self.delegator_peer_id, self.service_delegator_peer_id):
            if extra is not None:
                peers.append(extra)
        return tuple(peers)


@dataclass(frozen=True, kw_only=True)
class ServiceConnectionGrant(_ConnectionBase):
    type: ClassVar[GrantType] = GrantType.SERVICE_CONNECTION


@dataclass(frozen=True, kw_only=True)
class DelegatedServiceConnectionGrant(_ConnectionBase):
    delegator: Delegator
    type: ClassVar[GrantType] = GrantType.DELEGATED_SERVICE_CONNECTION

    @property
    def delegator_peer_id(self) -> str | None:
        return self.delegator.peer_id


ConnectionGrant: TypeAlias = ServiceConnectionGrant | DelegatedServiceConnectionGrant
PublicationGrant: TypeAlias = ServicePublicationGrant | DelegatedServicePublicationGrant
Grant: TypeAlias = ConnectionGrant | PublicationGrant

CONNECTION_GRANTS = (ServiceConnectionGrant, DelegatedServiceConnectionGrant)
PUBLICATION_GRANTS = (ServicePublicationGrant, DelegatedServicePublicationGrant)


@dataclass(frozen=True, kw_only=True)
class Validity:
    not_before: int
    not_after: int


@dataclass(frozen=True, kw_only=True)
class Contract:
    """``contractContent``; build it with :meth:`from_json`."""

    iv: UUID
    group_id: str
    validity: Validity
    grants: tuple[Grant, ...]
    hash_algorithm: str
    created_at: int
    # The content exactly as received: what is hashed and sent on.
    content: JsonObject = field(repr=False, hash=False)

    @classmethod
    def from_json(cls, obj: object) -> Contract:
        """Parse ``contract_content``; :class:`ContractError` (400) if it breaks the schema."""
        try:
            canonicalize(obj)  # I-JSON only (RFC 7493), or no Peer can hash it
        except JcsError as exc:
            raise _schema("contract content", str(exc)) from None
        content = _object(obj, "content")
        _members(
            content,
            "content",
            required=("iv", "group_id", "validity", "grants", "hash_algorithm", "created_at"),
        )
        iv_text = _string(content, "iv", "content")
        if not _UUID.fullmatch(iv_text):
            raise _schema("content.iv", f"{iv_text!r} is not a UUID")
        validity = _object(content["validity"], "content.validity")
        _members(validity, "content.validity", required=("not_before", "not_after"))
        grants_value = content["grants"]
        if not isinstance(grants_value, Sequence) or isinstance(grants_value, str):
            raise _schema("content.grants", "must be an array")
        frozen = freeze(content)
        assert isinstance(frozen, Mapping)
        frozen_grants = frozen["grants"]
        assert isinstance(frozen_grants, tuple)
        return cls(
            iv=UUID(iv_text),
            group_id=_string(content, "group_id", "content"),
            validity=Validity(
                not_before=_timestamp(validity, "not_before", "content.validity"),
                not_after=_timestamp(validity, "not_after", "content.validity"),
            ),
            grants=tuple(
                _grant(grant, f"content.grants[{index}]")
                for index, grant in enumerate(frozen_grants)
            ),
            hash_algorithm=_string(content, "hash_algorithm", "content"),
            created_at=_timestamp(content, "created_at", "content"),
            content=frozen,
        )

    def to_json(self) -> dict[str, Any]:
        """The content as received (array and member order kept), as a fresh mutable copy."""
        result: dict[str, Any] = thaw(self.content)
        return result

    def peer_ids(self) -> frozenset[str]:
        """Every Peer named in any grant: the Peers that must accept."""
        return frozenset(peer for grant in self.grants for peer in grant.peer_ids())

    def connection_grants(self) -> tuple[ConnectionGrant, ...]:
        return tuple(g for g in self.grants if isinstance(g, CONNECTION_GRANTS))

    def publication_grants(self) -> tuple[PublicationGrant, ...]:
        return tuple(g for g in self.grants if isinstance(g, PUBLICATION_GRANTS))


# -- schema checks -------------------------------------------------------------------------


def _schema(path: str, problem: str) -> ContractError:
    return ContractError(ErrorCode.CONTRACT_INVALID, f"{path}: {problem}", status=400)


def _object(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _schema(path, "must be an object")
    return value


def _members(
    obj: Mapping[str, Any], path: str, *, required: Sequence[str], optional: Sequence[str] = ()
) -> None:
    missing = [name for name in required if name not in obj]
    if missing:
        raise _schema(path, f"missing {', '.join(missing)}")
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        # Nobody signs what the Manager cannot interpret; extensions use "properties".
        raise _schema(path, f"unknown member(s) {', '.join(unknown)}")


def _string(
    obj: Mapping[str, Any], name: str, path: str, *, min_length: int = 0, max_length: int = 0
) -> str:
    value = obj[name]
    if not isinstance(value, str):
        raise _schema(f"{path}.{name}", "must be a string")
    if len(value) < min_length or (max_length and len(value) > max_length):
        raise _schema(f"{path}.{name}", f"must be {min_length} to {max_length} characters")
    return value


def _timestamp(obj: Mapping[str, Any], name: str, path: str) -> int:
    value = obj[name]
    # bool is an int in Python, not in JSON; 1.0 is a number but not an integer.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _schema(f"{path}.{name}", "must be an integer (Unix seconds)")
    if not 0 <= value <= _INT64_MAX:
        raise _schema(f"{path}.{name}", "must be a non-negative int64")
    return value


def _peer_id(obj: Mapping[str, Any], path: str) -> str:
    # manager.yaml peerID: 3..255 characters; the Group's format is checked in validation.
    return _string(obj, "peer_id", path, min_length=3, max_length=255)


def _service_name(obj: Mapping[str, Any], path: str) -> str:
    return _string(obj, "name", path, min_length=3, max_length=255)


def _enum(obj: Mapping[str, Any], name: str, path: str, enum: type[StrEnum]) -> Any:
    value = _string(obj, name, path)
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise _schema(f"{path}.{name}", f"{value!r} is not one of {allowed}") from None


def _delegator(value: object, path: str) -> Delegator:
    obj = _object(value, path)
    _members(obj, path, required=("peer_id",))
    return Delegator(peer_id=_peer_id(obj, path))


def _outway(value: object, path: str) -> Outway:
    obj = _object(value, path)
    _members(obj, path, required=("peer_id", "public_key_thumbprint"))
    return Outway(
        peer_id=_peer_id(obj, path),
        # Format checked in validation, which has ERROR_CODE_INCORRECT_PUBLIC_KEY_THUMBPRINT.
        public_key_thumbprint=_string(obj, "public_key_thumbprint", path),
    )


def _connected_service(value: object, path: str) -> Service | DelegatedService:
    obj = _object(value, path)
    if "type" not in obj:
        raise _schema(path, "missing type")  # READING.md item 8: the schema requires it
    service_type = _enum(obj, "type", path, ServiceType)
    if service_type is ServiceType.SERVICE:
        _members(obj, path, required=("type", "peer_id", "name"))
        return Service(peer_id=_peer_id(obj, path), name=_service_name(obj, path))
    _members(obj, path, required=("type", "peer_id", "name", "delegator"))
    return DelegatedService(
        peer_id=_peer_id(obj, path),
        name=_service_name(obj, path),
        delegator=_delegator(obj["delegator"], f"{path}.delegator"),
    )


def _publication(value: object, path: str) -> ServicePublication:
    obj = _object(value, path)
    _members(obj, path, required=("peer_id", "name", "protocol"))
    return ServicePublication(
        peer_id=_peer_id(obj, path),
        name=_service_name(obj, path),
        protocol=_enum(obj, "protocol", path, Protocol),
    )


_REQUIRED = {
    GrantType.SERVICE_PUBLICATION: ("type", "directory", "service"),
    GrantType.SERVICE_CONNECTION: ("type", "outway", "service"),
    GrantType.DELEGATED_SERVICE_CONNECTION: ("type", "outway", "service", "delegator"),
    GrantType.DELEGATED_SERVICE_PUBLICATION: ("type", "directory", "service", "delegator"),
}


def _grant(value: JsonValue, path: str) -> Grant:
    grant = _object(value, path)
    _members(grant, path, required=("data",))
    path = f"{path}.data"
    data = _object(grant["data"], path)
    if "type" not in data:
        raise _schema(path, "missing type")
    grant_type = _enum(data, "type", path, GrantType)
    _members(data, path, required=_REQUIRED[grant_type], optional=("properties",))
    properties = data.get("properties")
    if properties is not None and not isinstance(properties, Mapping):
        raise _schema(f"{path}.properties", "must be a JSON object")
    if "properties" in data and properties is None:
        raise _schema(f"{path}.properties", "must be a JSON object, not null")
    common: dict[str, Any] = {"properties": properties, "data": data}
    if grant_type is GrantType.SERVICE_PUBLICATION:
        return ServicePublicationGrant(
            directory=_directory(data["directory"], f"{path}.directory"),
            service=_publication(data["service"], f"{path}.service"),
            **common,
        )
    if grant_type is GrantType.DELEGATED_SERVICE_PUBLICATION:
        return DelegatedServicePublicationGrant(
            directory=_directory(data["directory"], f"{path}.directory"),
            service=_publication(data["service"], f"{path}.service"),
            delegator=_delegator(data["delegator"], f"{path}.delegator"),
            **common,
        )
    outway = _outway(data["outway"], f"{path}.outway")
    service = _connected_service(data["service"], f"{path}.service")
    if grant_type is GrantType.SERVICE_CONNECTION:
        return ServiceConnectionGrant(outway=outway, service=service, **common)
    return DelegatedServiceConnectionGrant(
        outway=outway,
        service=service,
        delegator=_delegator(data["delegator"], f"{path}.delegator"),
        **common,
    )


def _directory(value: object, path: str) -> Directory:
    obj = _object(value, path)
    _members(obj, path, required=("peer_id",))
    return Directory(peer_id=_peer_id(obj, path))
