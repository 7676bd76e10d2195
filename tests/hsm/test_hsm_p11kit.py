"""A network HSM's stand-in: the SoftHSM2 token served by ``p11-kit server`` in another process,
the appliance using p11-kit's client module (``p11-kit-client.so``) as its ``[hsm] module``.

Nothing else of the appliance changes: the key is generated, the CSR signed and the
certificate stored through the client module (``provision_with_token``), then the manager's
signer signs and ``sluis tls check`` completes a mutual TLS handshake with pkcs11-provider
loading the key through the same module. The client finds the server through
``P11_KIT_SERVER_ADDRESS`` (a unit's ``Environment=`` line on an appliance).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hosttools import require
from provisioned import p11kit_socket, provision_on_module

from appliance.config import SluisConfig
from appliance.demo.processes import run_with_identity
from appliance.hsm.keys import public_key
from appliance.hsm.settings import SOFTHSM_MODULE
from appliance.hsm.signer import Pkcs11Signer, raw_to_der
from appliance.hsm.softhsm import init_softhsm_token

P11KIT = "p11-kit"
CLIENT_MODULE = Path("/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so")
TOKEN = "remoted"


@dataclass
class RemoteHsm:
    config: SluisConfig
    config_path: Path
    server: subprocess.Popen[bytes]
    address: str


def _start_server(socket: Path, softhsm_conf: Path) -> subprocess.Popen[bytes]:
    socket.unlink(missing_ok=True)  # the session's one address (provisioned.p11kit_socket)
    server = subprocess.Popen(
        [P11KIT, "server", "-f", "--provider", str(SOFTHSM_MODULE), "--name", str(socket),
         f"pkcs11:token={TOKEN}"],
        env={**os.environ, "SOFTHSM2_CONF": str(softhsm_conf)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not socket.exists():
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            _, err = server.communicate()
            raise RuntimeError(f"p11-kit server did not start: {err.decode(errors='replace')}")
        time.sleep(0.05)
    return server


@pytest.fixture(scope="module")
def remote(softhsm_env: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteHsm]:
    require(P11KIT)
    require(str(CLIENT_MODULE))
    root = tmp_path_factory.mktemp("p11kit")
    conf = Path(os.environ["SOFTHSM2_CONF"])
    lock = getattr(softhsm_env, "login_lock")  # noqa: B009 - SoftHsmEnv lives in conftest
    user_pin = secrets.token_hex(8)
    # The key box: a SoftHSM2 token (a vendor's HSM partition), served over a socket.
    init_softhsm_token(TOKEN, secrets.token_hex(8), user_pin, login_lock=lock)
    socket = p11kit_socket(tmp_path_factory)
    server = _start_server(socket, conf)
    address = f"unix:path={socket}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("P11_KIT_SERVER_ADDRESS", address)
        # The appliance: only [hsm] module differs from a SoftHSM2 appliance.
        config = provision_on_module(
            root,
            module=CLIENT_MODULE,
            token_label=TOKEN,
            user_pin=user_pin,
            login_lock=lock,
            oin="00000001000000000923",
        )
        yield RemoteHsm(config, config.source or Path(), server, address)
    server.terminate()
    server.wait(timeout=10)


def test_the_key_lives_in_the_served_token(remote: RemoteHsm) -> None:
    assert remote.config.hsm.module == CLIENT_MODULE
    assert f"pkcs11-module-path = {CLIENT_MODULE}\n" in remote.config.tls.openssl_conf.read_text()
    # Generated through the client, found directly in SoftHSM2 on the key box.
    direct = replace(remote.config.hsm, module=SOFTHSM_MODULE)
    assert public_key(direct) == public_key(remote.config.hsm)


def test_signature_through_the_remote_token(remote: RemoteHsm) -> None:
    data = b"contract content hash " + secrets.token_bytes(16)
    with Pkcs11Signer(remote.config.hsm) as signer:
        signature = signer.sign(data)
        pub = signer.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(raw_to_der(signature), data, ec.ECDSA(hashes.SHA256()))


def test_mutual_tls_handshake_through_the_remote_token(remote: RemoteHsm) -> None:
    done = run_with_identity(remote.config_path, ["tls", "check"], timeout=120)
    assert done.returncode == 0, done.stderr
    assert remote.server.poll() is None


def _check_without_server(
    remote: RemoteHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    monkeypatch.setenv("P11_KIT_SERVER_ADDRESS", f"unix:path={tmp_path}/no-server.sock")
    done = run_with_identity(remote.config_path, ["tls", "check"], timeout=120)
    assert done.returncode != 0
    return done.stderr


def test_without_the_server_the_check_fails(
    remote: RemoteHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The handshake above really went through the server: without it there is no key.
    _check_without_server(remote, tmp_path, monkeypatch)


def test_without_the_server_the_error_names_the_token(
    remote: RemoteHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = _check_without_server(remote, tmp_path, monkeypatch)
    assert "Traceback" not in stderr
    assert remote.config.hsm.pkcs11_uri() in stderr
