"""A refused client certificate is answered with the TLS alert that says why (TLS 1.2, 1.3).

The client reads the alert: an operator can tell a missing certificate from an unknown CA or a
revoked certificate, instead of an EOF or a reset (docs/tls.md, "Refused peers").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tlsgroup import Appliance, Group

from appliance.demo.processes import Component

CLIENT = Path(__file__).with_name("alert_client.py")


def _client(
    group: Group, server: Component, identity: Appliance | None, *extra: str
) -> dict[str, str]:
    argv = [
        sys.executable,
        str(CLIENT),
        server.host,
        str(server.port),
        group.b.fqdn,
        str(group.b.config.tls.trust_anchors),
    ]
    env = dict(os.environ)
    if identity is not None:
        argv.append(str(identity.config_path))
        env.update(
            OPENSSL_CONF=str(identity.config.tls.openssl_conf), **identity.config.hsm.environment()
        )
    result = subprocess.run(
        [*argv, *extra], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, str] = json.loads(result.stdout)
    return answer


@pytest.mark.parametrize(
    ("who", "version", "alert"),
    [
        (None, "--tls13", "tlsv13 alert certificate required"),
        (None, "--tls12", "sslv3 alert handshake failure"),
        ("outsider", "--tls13", "tlsv1 alert unknown ca"),
        ("outsider", "--tls12", "tlsv1 alert unknown ca"),
        ("revoked", "--tls13", "sslv3 alert certificate revoked"),
        ("revoked", "--tls12", "sslv3 alert certificate revoked"),
    ],
)
def test_refused_client_reads_the_alert(
    group: Group, server_b: Component, who: str | None, version: str, alert: str
) -> None:
    identity = getattr(group, who) if who else None
    answer = _client(group, server_b, identity, version)
    assert alert in answer.get("error", ""), answer
