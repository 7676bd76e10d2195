"""The token endpoint's answers as counted for /metrics: ``sluis_manager_tokens_total{result}``,
``issued`` or the OAuth error it answered (docs/monitoring.md)."""

from __future__ import annotations

from typing import Any

from apitest import Api, hash_of, sign
from contracttest import OIN_A, OIN_B, Group
from prometheus_client import REGISTRY

from appliance.manager.contracts.signatures import SignatureType


def _counted(result: str) -> float:
    return REGISTRY.get_sample_value("sluis_manager_tokens_total", {"result": result}) or 0.0


def test_issued_and_refused_tokens_are_counted(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    posted = provider.post_contract(connection, sign(connection, group[OIN_A]), peer=group[OIN_A])
    assert posted.status_code == 201, posted.text
    (grant,) = provider.service.sign(hash_of(connection), SignatureType.ACCEPT).grant_hashes
    before = {
        r: _counted(r) for r in ("issued", "invalid_grant", "invalid_client", "invalid_request")
    }
    form = {"grant_type": "client_credentials", "scope": grant, "client_id": OIN_A}

    assert provider.token(form, peer=group[OIN_A]).status_code == 200
    assert provider.token(form, peer=group[OIN_A]).status_code == 200
    assert provider.token({**form, "scope": "$1$" + "A" * 43}, peer=group[OIN_A]).status_code == 400
    assert provider.token({**form, "client_id": OIN_B}, peer=group[OIN_A]).status_code == 400
    assert (
        provider.token({"grant_type": "client_credentials"}, peer=group[OIN_A]).status_code == 400
    )

    assert _counted("issued") - before["issued"] == 2
    assert _counted("invalid_grant") - before["invalid_grant"] == 1
    assert _counted("invalid_client") - before["invalid_client"] == 1
    assert _counted("invalid_request") - before["invalid_request"] == 1
