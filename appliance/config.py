"""The appliance configuration file (TOML), one per box, shared by every component.

Example (``docs/configuration.md`` lists every key)::

    [hsm]
    module = "/usr/lib/softhsm/libsofthsm2.so"
    token_label = "sluis"
    key_label = "sluis-organisation"
    pin_file = "/etc/sluis/hsm.pin"
    login_lock = "/run/lock/sluis-hsm.lock"

    [tls]
    certificate_chain = "/etc/sluis/certs/organisation.pem"
    key_reference = "/etc/sluis/keys/organisation.key.pem"
    trust_anchors = "/etc/sluis/trust/anchors.pem"
    crls = "/var/lib/sluis/crl/crls.pem"
    openssl_conf = "/etc/sluis/openssl.cnf"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from appliance.errors import ConfigurationError
from appliance.hsm.settings import HsmSettings


@dataclass(frozen=True)
class TlsSettings:
    """Files that make up the organisation's TLS identity and what it trusts.

    ``key_reference`` is a PEM URI file naming the HSM key, never a private key.
    ``crls`` is a PEM bundle of the CRLs of every CA in the trusted chains; verification fails
    closed when a CRL is missing or past its nextUpdate.
    """

    certificate_chain: Path
    key_reference: Path
    trust_anchors: Path
    crls: Path
    openssl_conf: Path


@dataclass(frozen=True)
class ManagerSettings:
    """The FSC Manager of this appliance (``[manager]``; only on boxes that run one).

    ``address`` is this Manager's own URL (scheme https and a port, as ``Fsc-Manager-Address``
    requires); ``inway_address`` is the ``aud`` of the access tokens it issues.
    """

    peer_name: str
    group_id: str
    address: str
    database: str
    inway_address: str = ""
    directory_peer_id: str = ""
    directory_address: str = ""
    is_directory: bool = False
    token_lifetime_seconds: int = 300
    delivery_interval_seconds: int = 2
    # Like curl --resolve: "host:port=ip:port" entries for Manager addresses that DNS does not
    # know (the demo Group and the tests run every organisation on 127.0.0.1).
    resolve: tuple[str, ...] = ()
    # Peers' Manager addresses may resolve to loopback (the demo and the tests); off on a real
    # appliance, where only an attacker would name one (appliance.manager.addresses).
    allow_loopback_peer_addresses: bool = False


@dataclass(frozen=True)
class InwaySettings:
    """The inway of this appliance (``[inway]``; only on boxes that run one).

    ``services`` maps each offered Service to its backend: ``"name=http://host:port/base"``.
    ``address`` is the inway's own URL (https with a port), the ``aud`` of the access tokens
    it accepts; ``group_id`` the Group's id. Both default to the ``[manager]`` values
    (``inway_address``, ``group_id``) when empty. ``transaction_log`` names the transaction
    log writer (``module:factory``; see ``appliance.inway.logging``).
    """

    services: tuple[str, ...] = ()
    address: str = ""
    group_id: str = ""
    bind: str = "0.0.0.0:443"
    transaction_log: str = ""
    connect_timeout_seconds: int = 5
    read_timeout_seconds: int = 30
    write_timeout_seconds: int = 30
    backend_connections: int = 256
    clock_skew_seconds: int = 5
    # {service = "Header, ..."}: headers the forwarding policy removes, passed to that service.
    pass_headers: tuple[tuple[str, str], ...] = ()
    # Requests in flight per service and worker (appliance.forwarding.limits; 0: a quarter of
    # backend_connections); {service = n}.
    service_limit: int = 0
    service_limits: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class OutwaySettings:
    """The outway of this appliance (``[outway]``; only on boxes that run one).

    It listens on the internal network (``bind``) for local applications and forwards to
    other peers' inways over mutual TLS. ``group_id`` defaults to ``[manager] group_id``;
    ``transaction_log`` names the log writer (``module:factory``; empty: the durable log of
    ``[txlog]``; see ``appliance.outway.logging``).
    """

    bind: str = "0.0.0.0:8080"
    group_id: str = ""
    transaction_log: str = ""
    connect_timeout_seconds: int = 5
    read_timeout_seconds: int = 30
    write_timeout_seconds: int = 30
    inway_connections: int = 256
    token_timeout_seconds: int = 10
    token_refresh_seconds: int = 30
    forward_purpose_headers: bool = False
    # {"peer-id/service" = "Header, ..."}: as [inway] pass_headers, for the app's requests.
    pass_headers: tuple[tuple[str, str], ...] = ()
    # Requests in flight per inway and service, per worker (0: a quarter of inway_connections);
    # {"peer-id/service" = n}.
    service_limit: int = 0
    service_limits: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class HttpSettings:
    """What every listener of the appliance accepts before a request reaches its app
    (``[http]``; ``appliance.serving.protocol``, docs/configuration.md)."""

    max_head_bytes: int = 16384  # request line and header fields together: 431 above
    max_line_bytes: int = 8192  # one header field (431) or the request target (414)
    max_headers: int = 100  # header fields: 431 above
    head_timeout_seconds: int = 10  # TLS handshake, then the whole head: 408 (or closed)
    idle_timeout_seconds: int = 75  # a kept-alive connection with no new request: closed

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 1:
                raise ConfigurationError(f"[http] {name} must be at least 1")


@dataclass(frozen=True)
class ManagementSettings:
    """``[management]``: a plain-HTTP listener per component for ``/metrics`` and
    ``/health/*`` only, on the management network (``appliance.serving.management``,
    docs/monitoring.md). Without the section there is none."""

    address: str = "127.0.0.1"  # the management network's address of this box
    manager_port: int = 9181
    inway_port: int = 9182
    outway_port: int = 9183
    controller_port: int = 9184

    def __post_init__(self) -> None:
        ports = (self.manager_port, self.inway_port, self.outway_port, self.controller_port)
        if not all(0 < port < 65536 for port in ports) or len(set(ports)) != len(ports):
            raise ConfigurationError("[management] ports must be distinct, 1 to 65535")

    def bind(self, component: str) -> str | None:
        """``host:port`` of ``component``'s management listener (None: it has none)."""
        port = getattr(self, f"{component}_port", None)
        if not isinstance(port, int):
            return None
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{port}"


@dataclass(frozen=True)
class TxlogSettings:
    """The transaction log (``[txlog]``): where both gateways write, the Manager reads.

    ``pseudonym_key_file`` holds the secret that pseudonymises data subjects (root-only);
    see docs/txlog.md.
    """

    database: str
    pseudonym_key_file: str = ""
    max_batch: int = 256
    write_timeout_seconds: int = 30


@dataclass(frozen=True)
class OidcSettings:
    """Login with the organisation's OpenID Connect provider (``[controller.oidc]``).

    ``roles`` maps a value of the ``groups_claim`` claim to a controller role, in the order
    written: the first group of the mapping the user has decides. ``client_secret_file`` holds
    the client secret (root-only), never the configuration itself; ``ca_bundle`` the CAs that
    the provider's TLS certificate is checked against (empty: the system's). See
    docs/controller.md.
    """

    issuer: str
    client_id: str
    client_secret_file: str
    redirect_url: str
    roles: tuple[tuple[str, str], ...] = ()
    scopes: tuple[str, ...] = ("openid", "profile")
    groups_claim: str = "groups"
    username_claim: str = "preferred_username"
    ca_bundle: str = ""
    provider_name: str = "single sign-on"
    leeway_seconds: int = 60
    timeout_seconds: int = 10


@dataclass(frozen=True)
class ControllerSettings:
    """The operators' controller (``[controller]``; see docs/controller.md).

    It listens on the internal network (``bind``) over HTTPS: with the organisation's
    certificate and HSM key, or with a separate server certificate (``certificate_chain``
    and ``key_file``, the latter a PEM URI naming an HSM key or a key file). ``manager_address``,
    ``inway_address`` and ``outway_address`` are probed for the health page (empty: taken
    from ``[manager]``, ``[inway]`` and ``[outway]``).
    """

    database: str = "sqlite:////var/lib/sluis/controller.db"
    bind: str = "0.0.0.0:9443"
    session_idle_minutes: int = 30
    session_absolute_minutes: int = 480
    lockout_attempts: int = 5
    lockout_minutes: int = 15
    manager_address: str = ""
    inway_address: str = ""
    outway_address: str = ""
    certificate_chain: str = ""
    key_file: str = ""
    oidc: OidcSettings | None = None


@dataclass(frozen=True)
class SluisConfig:
    hsm: HsmSettings
    tls: TlsSettings
    source: Path | None = None
    manager: ManagerSettings | None = None
    inway: InwaySettings | None = None
    txlog: TxlogSettings | None = None
    outway: OutwaySettings | None = None
    controller: ControllerSettings | None = None
    http: HttpSettings = HttpSettings()
    management: ManagementSettings | None = None


def _section(data: dict[str, Any], name: str, source: Path) -> dict[str, Any]:
    section = data.get(name)
    if not isinstance(section, dict):
        raise ConfigurationError(f"{source}: missing [{name}] section")
    return section


def _build(cls: type[Any], values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigurationError(f"{where}: unknown setting(s) {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        # Types come from the annotation: paths and text are strings, then ints and booleans.
        annotation = str(known[name].type)
        if name in _NESTED:
            if not isinstance(value, dict):
                raise ConfigurationError(f"{where}: {name} must be a table ([section.{name}])")
            kwargs[name] = _build(_NESTED[name], value, f"{where[:-1]}.{name}]")
            continue
        if annotation.startswith("tuple[tuple[str, str]"):
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ConfigurationError(f"{where}: {name} must be a table of strings")
            kwargs[name] = tuple(value.items())
            continue
        if annotation.startswith("tuple[tuple[str, int]"):
            if not isinstance(value, dict) or not all(type(v) is int for v in value.values()):
                raise ConfigurationError(f"{where}: {name} must be a table of integers")
            kwargs[name] = tuple(value.items())
            continue
        if annotation.startswith("tuple[str"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigurationError(f"{where}: {name} must be a list of strings")
            kwargs[name] = tuple(value)
            continue
        expected: type = bool if annotation == "bool" else int if annotation == "int" else str
        if type(value) is not expected:
            raise ConfigurationError(f"{where}: {name} must be of type {expected.__name__}")
        kwargs[name] = Path(str(value)) if "Path" in annotation else value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


# Tables inside a section: [controller.oidc].
_NESTED: dict[str, type[Any]] = {"oidc": OidcSettings}
_OPTIONAL_SECTIONS = ("manager", "inway", "txlog", "outway", "controller", "http", "management")


def _optional(cls: type[Any], data: dict[str, Any], name: str, source: Path) -> Any:
    """The settings of section ``name``, or None when the file has no such section."""
    if name not in data:
        return None
    return _build(cls, _section(data, name, source), f"{source} [{name}]")


def load_config(path: Path) -> SluisConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigurationError(f"configuration file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
    hsm = _build(HsmSettings, _section(data, "hsm", path), f"{path} [hsm]")
    tls = _build(TlsSettings, _section(data, "tls", path), f"{path} [tls]")
    manager = _optional(ManagerSettings, data, "manager", path)
    inway = _optional(InwaySettings, data, "inway", path)
    txlog = _optional(TxlogSettings, data, "txlog", path)
    outway = _optional(OutwaySettings, data, "outway", path)
    controller = _optional(ControllerSettings, data, "controller", path)
    http = _optional(HttpSettings, data, "http", path) or HttpSettings()
    management = _optional(ManagementSettings, data, "management", path)
    unknown = sorted(set(data) - {"hsm", "tls", *_OPTIONAL_SECTIONS})
    if unknown:
        raise ConfigurationError(f"{path}: unknown section(s) {', '.join(unknown)}")
    return SluisConfig(
        hsm=hsm,
        tls=tls,
        source=path,
        manager=manager,
        inway=inway,
        txlog=txlog,
        outway=outway,
        controller=controller,
        http=http,
        management=management,
    )
