"""[inway] configuration, the log writers and the inway's own signing certificates."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from inwaytest import CA, OIN_OTHER, OIN_OWN, OWN, PEER, TRANSACTION

from appliance.cli.serve import _default_bind
from appliance.config import InwaySettings, load_config
from appliance.errors import ConfigurationError
from appliance.inway.certificates import SigningCertificates
from appliance.inway.logging import (
    JsonLinesLogWriter,
    LogWriter,
    MemoryLogWriter,
    load_log_writer,
)
from appliance.inway.settings import normalise_address, parse_services, resolve_runtime

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
"""

MANAGER = """
[manager]
peer_name = "Registers"
group_id = "sluis.demo"
address = "https://registers.sluis.test:8443"
database = "sqlite:////var/lib/sluis/manager.db"
inway_address = "https://registers.sluis.test:443"
"""

INWAY = """
[inway]
services = ["basisregistratie=http://127.0.0.1:8080/api/", "kadaster=https://10.0.0.5"]
address = "https://Inway.Example.nl:443/"
group_id = "fsc.group"
bind = "0.0.0.0:8444"
transaction_log = "jsonl:/var/log/x.jsonl"
connect_timeout_seconds = 2
read_timeout_seconds = 60
backend_connections = 32
clock_skew_seconds = 0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sluis.toml"
    path.write_text(text)
    return path


def test_the_inway_section_is_optional(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE + MANAGER))
    assert config.inway is None
    assert config.manager is not None


def test_the_inway_section_is_typed(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE + INWAY))
    assert config.inway == InwaySettings(
        services=("basisregistratie=http://127.0.0.1:8080/api/", "kadaster=https://10.0.0.5"),
        address="https://Inway.Example.nl:443/",
        group_id="fsc.group",
        bind="0.0.0.0:8444",
        transaction_log="jsonl:/var/log/x.jsonl",
        connect_timeout_seconds=2,
        read_timeout_seconds=60,
        backend_connections=32,
        clock_skew_seconds=0,
    )
    runtime = resolve_runtime(config)
    assert runtime.address == "https://inway.example.nl:443"
    assert runtime.group_id == "fsc.group"
    assert runtime.read_timeout == 60.0
    assert runtime.services["basisregistratie"].origin == "http://127.0.0.1:8080"
    assert runtime.services["basisregistratie"].path == "/api"
    assert runtime.services["kadaster"].origin == "https://10.0.0.5"
    assert runtime.services["kadaster"].path == ""


def test_address_and_group_default_to_the_manager(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE + MANAGER + '[inway]\nservices = ["a=http://b"]\n'))
    runtime = resolve_runtime(config)
    assert runtime.address == "https://registers.sluis.test:443"
    assert runtime.group_id == "sluis.demo"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[inway]\nservices = "a=http://b"\n', "list of strings"),
        ("[inway]\nread_timeout_seconds = 1.5\n", "must be of type int"),
        ('[inway]\nreadtimeout = "1"\n', "unknown setting"),
    ],
)
def test_malformed_inway_sections(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_config(write(tmp_path, BASE + extra))


@pytest.mark.parametrize(
    ("inway", "message"),
    [
        ('services = []\ngroup_id = "g"\n', "address is not set"),
        ('address = "https://x:443"\n', "group_id"),
        ('address = "http://x:443"\ngroup_id = "g"\n', "https URL with host and port"),
        ('address = "https://x"\ngroup_id = "g"\n', "https URL with host and port"),
        ('address = "https://x:443/path"\ngroup_id = "g"\n', "https URL"),
        ('address = "https://x:443"\ngroup_id = "g g"\n', "not a Group ID"),
        ('address = "https://x:443"\ngroup_id = "g"\nread_timeout_seconds = 0\n', "positive"),
        ('address = "https://x:443"\ngroup_id = "g"\nservices = ["a"]\n', "name=URL"),
        ('address = "https://x:443"\ngroup_id = "g"\nservices = ["a b=http://x"]\n', "name"),
        (
            'address = "https://x:443"\ngroup_id = "g"\nservices = ["a=http://x", "a=http://y"]\n',
            "listed twice",
        ),
    ],
)
def test_inway_settings_are_checked(tmp_path: Path, inway: str, message: str) -> None:
    config = load_config(write(tmp_path, BASE + "[inway]\n" + inway))
    with pytest.raises(ConfigurationError, match=message):
        resolve_runtime(config)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x/",
        "http://user:pw@x/",
        "http://x/?q=1",
        "http://x/#f",
        "http:///nohost",
        "http://x/a/../b",
        "http://x/a%2fb",
        "x",
    ],
)
def test_backend_urls_are_checked(url: str) -> None:
    with pytest.raises(ConfigurationError, match="backend must be"):
        parse_services((f"svc={url}",))


def test_ipv6_backends() -> None:
    (backend,) = parse_services(("svc=http://[::1]:8080/x",)).values()
    assert backend.origin == "http://[::1]:8080"
    assert normalise_address("https://[::1]:443") == "https://[::1]:443"


def test_serve_binds_the_inway_where_its_section_says(tmp_path: Path) -> None:
    with_bind = write(tmp_path, BASE + INWAY)
    assert _default_bind("inway", with_bind) == "0.0.0.0:8444"
    (tmp_path / "other").mkdir()
    without = write(tmp_path / "other", BASE)
    assert _default_bind("inway", without) == "0.0.0.0:443"
    assert _default_bind("manager", with_bind) == "127.0.0.1:8443"


# -- log writers ------------------------------------------------------------------------------


def test_no_transaction_log_means_no_inway(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    with pytest.raises(ConfigurationError, match="does not start without one"):
        load_log_writer("", config)


def test_jsonl_writer(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE))
    writer = load_log_writer(f"jsonl:{tmp_path / 'log.jsonl'}", config)
    assert isinstance(writer, JsonLinesLogWriter)
    asyncio.run(writer.write({"transaction_id": TRANSACTION, "n": 1}))
    asyncio.run(writer.write({"transaction_id": TRANSACTION, "n": 2}))
    assert [r["n"] for r in writer.records()] == [1, 2]
    assert os.stat(tmp_path / "log.jsonl").st_mode & 0o777 == 0o600
    with pytest.raises(ConfigurationError, match="absolute path"):
        load_log_writer("jsonl:relative.jsonl", config)


def test_jsonl_writer_failure_raises(tmp_path: Path) -> None:
    writer = JsonLinesLogWriter(tmp_path / "missing-dir" / "log.jsonl")
    with pytest.raises(FileNotFoundError):
        asyncio.run(writer.write({"a": 1}))


def test_a_factory_plugs_in_a_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(write(tmp_path, BASE))
    module = types.ModuleType("inway_test_txlog")
    made: list[Any] = []

    def factory(received: Any) -> LogWriter:
        made.append(received)
        return MemoryLogWriter()

    module.factory = factory  # type: ignore[attr-defined]
    module.not_a_writer = lambda config: object()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "inway_test_txlog", module)
    assert isinstance(load_log_writer("inway_test_txlog:factory", config), MemoryLogWriter)
    assert made == [config]
    with pytest.raises(ConfigurationError, match="made no LogWriter"):
        load_log_writer("inway_test_txlog:not_a_writer", config)
    with pytest.raises(ConfigurationError, match="no_such"):
        load_log_writer("inway_test_txlog:no_such", config)
    with pytest.raises(ConfigurationError, match="module:factory"):
        load_log_writer("just-a-name", config)


# -- own certificates -------------------------------------------------------------------------


def test_signing_certificates_follow_a_rotation(tmp_path: Path) -> None:
    chain = tmp_path / "organisation.pem"
    chain.write_bytes(OWN.pem + CA.certificate.public_bytes(Encoding.PEM))
    assert SigningCertificates.from_file(chain).peer_id == OIN_OWN
    now = [0.0]
    certificates = SigningCertificates(
        [OWN.certificate], path=chain, check_interval=5, clock=lambda: now[0]
    )
    assert certificates.peer_id == OIN_OWN
    assert certificates.find(OWN.thumbprint) is not None
    renewed = CA.issue(OIN_OWN)
    chain.write_bytes(renewed.pem)
    os.utime(chain, ns=(1, 1))
    # Known thumbprints do not look at the file before the interval has passed ...
    assert certificates.find(OWN.thumbprint) is not None
    assert certificates._stamp != certificates._file_stamp()
    # ... an unknown one (a token signed with the just-installed certificate) looks at once.
    assert certificates.find(renewed.thumbprint) is not None
    now[0] = 6.0
    assert certificates.find(OWN.thumbprint) is not None  # tokens signed before still verify
    # A chain of another peer (a mistake) is not taken over.
    chain.write_bytes(CA.issue(OIN_OTHER).pem)
    now[0] = 12.0
    assert certificates.peer_id == OIN_OWN
    # A half-written file keeps what is known.
    chain.write_bytes(b"-----BEGIN CERT")
    now[0] = 18.0
    assert certificates.find(renewed.thumbprint) is not None


def test_unusable_own_certificates_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no signing certificate"):
        SigningCertificates([])
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    with pytest.raises(ConfigurationError, match="cannot read the certificate chain"):
        SigningCertificates.from_file(empty)
    with pytest.raises(ConfigurationError, match="serialNumber"):
        SigningCertificates([CA.issue(None).certificate])
    assert SigningCertificates([PEER.certificate]).peer_id != OIN_OWN


def test_records_are_json(tmp_path: Path) -> None:
    writer = JsonLinesLogWriter(tmp_path / "l.jsonl")
    asyncio.run(writer.write({"b": 1, "a": [1, 2]}))
    assert json.loads((tmp_path / "l.jsonl").read_text()) == {"a": [1, 2], "b": 1}


def test_a_worker_started_after_a_rotation_knows_the_previous_certificate(
    tmp_path: Path,
) -> None:
    # certs/organisation.pem -> archive/new.pem, organisation.pem.previous -> archive/old.pem:
    # tokens the Manager signed with the old certificate just before the reload still verify.
    archive = tmp_path / "archive"
    archive.mkdir()
    renewed = CA.issue(OIN_OWN)
    (archive / "old.pem").write_bytes(OWN.pem)
    (archive / "new.pem").write_bytes(renewed.pem)
    live = tmp_path / "organisation.pem"
    live.symlink_to("archive/new.pem")
    certificates = SigningCertificates.from_file(live)
    assert certificates.find(renewed.thumbprint) is not None
    assert certificates.find(OWN.thumbprint) is None  # no previous link yet
    (tmp_path / "organisation.pem.previous").symlink_to("archive/old.pem")
    certificates = SigningCertificates.from_file(live)
    assert certificates.find(renewed.thumbprint) is not None
    assert certificates.find(OWN.thumbprint) is not None
    # A previous link to another peer's chain is left out; the live one still counts.
    (archive / "old.pem").write_bytes(CA.issue(OIN_OTHER).pem)
    certificates = SigningCertificates.from_file(live)
    assert certificates.peer_id == OIN_OWN
    assert certificates.find(renewed.thumbprint) is not None


def test_pass_headers_are_per_service(tmp_path: Path) -> None:
    text = INWAY + 'pass_headers = {kadaster = "X-Remote-User, Sluis-Processing-Activity"}\n'
    runtime = resolve_runtime(load_config(write(tmp_path, BASE + text)))
    assert runtime.services["kadaster"].pass_headers == {
        "x-remote-user",
        "sluis-processing-activity",
    }
    assert runtime.services["basisregistratie"].pass_headers == frozenset()


@pytest.mark.parametrize(
    ("table", "complaint"),
    [
        ('{kadaster = "Fsc-Peer-Id"}', "Fsc-\\* headers cannot be passed"),
        ('{kadaster = "Connection"}', "sets this header itself"),
        ('{kadaster = "X Bad"}', "not a header name"),
        ('{elsewhere = "X-Remote-User"}', "is not a service"),
    ],
)
def test_pass_headers_that_cannot_be_are_refused_at_start(
    tmp_path: Path, table: str, complaint: str
) -> None:
    config = load_config(write(tmp_path, BASE + INWAY + f"pass_headers = {table}\n"))
    with pytest.raises(ConfigurationError, match=complaint):
        resolve_runtime(config)
