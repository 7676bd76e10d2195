"""The token goes away under load, behind a real listener: gunicorn with two workers whose TLS
key pkcs11-provider holds, a client opening a new mutual-TLS connection every 20 ms from each
of two threads (each a full handshake, so each needs the key), the token gone for two seconds.

For each kind of token the test prints the requests, the failures by kind and the recovery
time (from the token's return to the first request answered again), and asserts:

- while the key cannot sign, new handshakes are refused in the handshake (a TLS alert or a
  closed connection), never an HTTP 5xx;
- the listener recovers by itself, within seconds, under the same gunicorn master (no
  restart): the workers are replaced once a fresh process can use the token
  (``appliance.hsm.watch``);
- the log says so in one line per worker and kind of failure and one when it is back, never
  one per request, and holds no traceback.

SoftHSM2 keeps a token in memory once a process has loaded it: with its token store moved away
the running workers go on signing, so nothing fails there (the case is kept to prove that).
"""

from __future__ import annotations

import multiprocessing
import secrets
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from hosttools import require
from outage import (
    WORKERS,
    Case,
    run_under_load,
    software_peer,
    summarise,
    wait_for_workers,
    watch_lines,
)
from provisioned import p11kit_socket, provision_on_module
from test_hsm_token_status import CLIENT_MODULE, KeyBox

from appliance.config import SluisConfig
from appliance.demo.processes import Component, start_component
from appliance.demo.provision import Organisation, provision_organisation
from appliance.hsm.softhsm import init_softhsm_token
from appliance.hsm.swtpm import TOOLS, TPM2_PKCS11_MODULE, start_software_tpm
from appliance.pki.ca import DemoCA
from appliance.pki.identity import OrganisationIdentity

pytestmark = pytest.mark.slow


def one_request(ctx: ssl.SSLContext, component: Component, fqdn: str) -> str:
    """``HTTP 200``, ``HTTP 503``..., or the kind of TLS/connection failure."""
    try:
        with (
            socket.create_connection((component.host, component.port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=fqdn) as tls,
        ):
            tls.sendall(
                f"GET /whoami HTTP/1.1\r\nHost: {fqdn}\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    except ssl.SSLError as exc:
        return f"{type(exc).__name__}: {exc.reason}"
    except OSError as exc:
        return type(exc).__name__
    if not data.startswith(b"HTTP/1.1 "):
        return "no HTTP answer"
    return "HTTP " + data.split(b" ", 2)[1].decode()


def check(case: Case, tmp_path: Path, *, expect_failures: bool) -> None:
    ctx = software_peer(
        case.ca,
        tmp_path,
        organisation="Load client",
        serial="00000001000000000099",
        fqdn="client.sluis.test",
        server=False,
    )
    component = start_component(
        case.name,
        case.config.source or Path(),
        "whoami",
        workers=WORKERS,
        log_dir=tmp_path / "logs",
    )
    try:
        master = psutil.Process(component.process.pid)
        # The listener answers once one worker serves; the count of workers replaced and of
        # "usable again" lines is per worker, so wait for both (a CI run took the set while
        # the second still booted, and then counted its line as one too many).
        wait_for_workers(component, WORKERS)
        before = {p.pid for p in master.children()}
        offset = len(component.log())
        run = run_under_load(
            case, lambda: one_request(ctx, component, case.fqdn), outage_shows=expect_failures
        )
        lines = [line for line in component.log()[offset:].splitlines() if line.strip()]
        after = {p.pid for p in master.children()}
        assert component.process.poll() is None, "the master stopped"
    finally:
        component.stop()
    failed = run.failed()
    summarise(case, run, lines, "", f"workers replaced: {len(before - after)}; ")
    # Never an HTTP error for a refused key: the handshake itself fails.
    assert not [o for _, o in failed if o.startswith("HTTP")], failed
    watch_down, watch_up = watch_lines(lines)
    if expect_failures:
        assert failed, "the outage did not show: nothing failed"
        assert before - after, "no worker was replaced"
        # One line per worker and kind, one per worker when back: not one per request.
        assert 1 <= len(watch_down) <= 2 * len(before), watch_down
        assert 1 <= len(watch_up) <= len(before), watch_up
        assert len(failed) > 4 * len(watch_down)
        # The replaced workers' start and stop lines, the module's few: not one per request.
        assert len(lines) < 60, lines
        assert len(lines) < len(failed) / 2, lines
    else:
        assert not failed, failed
        assert not watch_down, watch_down


def provision_in_child(root: Path, **options: Any) -> SluisConfig:
    """``provision_on_module`` in a fresh process: this one must not load the module, which
    would stay bound to this test's token (its server or TPM gone afterwards) for the tests
    after it (python-pkcs11 loads a module once per process)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        config: SluisConfig = pool.apply(provision_on_module, (root,), options)
    return config


@pytest.fixture
def softhsm_case(tmp_path: Path) -> Case:
    ca = DemoCA.create(tmp_path / "ca", crl_base_url="http://127.0.0.1:1/crl")
    identity = OrganisationIdentity("Organisation e", "00000001000000000231", ("e.sluis.test",))
    config = provision_organisation(ca, Organisation(identity, "outage-softhsm"), tmp_path / "e")
    assert config.hsm.softhsm_conf is not None
    tokens = config.hsm.softhsm_conf.parent / "tokens"
    away = tokens.with_name("tokens.away")
    return Case(
        "softhsm-store-moved",
        config,
        ca,
        lambda: tokens.rename(away),
        lambda: away.rename(tokens),
        "e.sluis.test",
    )


@pytest.fixture
def p11kit_case(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, softhsm_env: object
) -> Iterator[Case]:
    require("p11-kit")
    require(str(CLIENT_MODULE))
    user_pin = secrets.token_hex(8)
    lock: Path = getattr(softhsm_env, "login_lock")  # noqa: B009 - SoftHsmEnv is conftest's
    # A label of its own: the session's SoftHSM2 store keeps the tokens of the tests before
    # (the listener's and the outway's test both use this case).
    label = f"outage-p11kit-{secrets.token_hex(3)}"
    init_softhsm_token(label, secrets.token_hex(8), user_pin, login_lock=lock)
    box = KeyBox(p11kit_socket(tmp_path_factory), label)
    box.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("P11_KIT_SERVER_ADDRESS", f"unix:path={box.socket}")
            config = provision_in_child(
                tmp_path,
                module=CLIENT_MODULE,
                token_label=label,
                user_pin=user_pin,
                login_lock=lock,
                oin="00000001000000000232",
            )
            ca = DemoCA.open(tmp_path / "ca")
            yield Case(
                "p11-kit-server-stopped",
                config,
                ca,
                box.stop,
                box.start,
                f"{label}.sluis.test",
            )
    finally:
        box.stop()


@pytest.fixture
def tpm_case(tmp_path: Path, softhsm_env: object) -> Iterator[Case]:
    for tool in TOOLS:
        require(tool)
    require(str(TPM2_PKCS11_MODULE))
    user_pin = secrets.token_hex(8)
    tpm = start_software_tpm(tmp_path / "tpm", "outage-tpm", user_pin, secrets.token_hex(8))
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in tpm.environment.items():
                mp.setenv(name, value)
            config = provision_in_child(
                tmp_path,
                module=TPM2_PKCS11_MODULE,
                token_label="outage-tpm",
                user_pin=user_pin,
                login_lock=tmp_path / "hsm.lock",
                oin="00000001000000000233",
            )
            ca = DemoCA.open(tmp_path / "ca")
            yield Case(
                "swtpm-stopped", config, ca, tpm.stop_tpm, tpm.start_tpm, "outage-tpm.sluis.test"
            )
    finally:
        tpm.stop()


def test_listener_with_the_network_hsm_gone(p11kit_case: Case, tmp_path: Path) -> None:
    check(p11kit_case, tmp_path, expect_failures=True)


def test_listener_with_the_tpm_gone(tpm_case: Case, tmp_path: Path) -> None:
    check(tpm_case, tmp_path, expect_failures=True)


def test_listener_with_the_softhsm_store_moved_away(softhsm_case: Case, tmp_path: Path) -> None:
    check(softhsm_case, tmp_path, expect_failures=False)
