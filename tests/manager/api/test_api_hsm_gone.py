"""Requests that need the organisation key's signature while its HSM token is gone: 503 in the
FSC format with Retry-After, not a 500 with a traceback; the key watch hears of it once.

The signer here raises what ``Pkcs11Signer`` raises when its token is gone (an ``HsmError``);
the token really going away behind real listeners is in tests/hsm/test_hsm_listener_outage.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apitest import Api, assert_fsc_error, hash_of, sign
from contracttest import OIN_A, Group

from appliance.hsm import watch
from appliance.hsm.errors import HsmError
from appliance.hsm.keys import SigningPublicKey
from appliance.hsm.settings import HsmSettings
from appliance.hsm.signer import Signer
from appliance.manager.contracts.signatures import SignatureType
from appliance.manager.errors import HSM_UNAVAILABLE


class TokenGone:
    """A signer whose token went away (what Pkcs11Signer raises then)."""

    def __init__(self, working: Signer) -> None:
        self.algorithm = working.algorithm
        self._public = working.public_key()

    def sign(self, data: bytes) -> bytes:
        raise HsmError("PKCS#11 error DeviceRemoved on token 'sluis' while signing")

    def public_key(self) -> SigningPublicKey:
        return self._public


@pytest.fixture
def key_watch() -> Iterator[watch.KeyWatch]:
    keys = watch.KeyWatch(
        HsmSettings(token_label="sluis", pin_file=Path("/nonexistent")),
        lambda: "still gone",
        threading.Event().set,
        first_check=60,
    )
    watch.install(keys)
    yield keys
    watch.install(None)


def test_token_request_while_the_token_is_gone(
    provider: Api, connection: dict[str, Any], group: Group, key_watch: watch.KeyWatch
) -> None:
    result = provider.post_contract(connection, sign(connection, group[OIN_A]), peer=group[OIN_A])
    assert result.status_code == 201, result.text
    provider.service.sign(hash_of(connection), SignatureType.ACCEPT)
    (grant,) = provider.service.get(hash_of(connection)).grant_hashes
    provider.service.signer = TokenGone(provider.service.signer)
    form = {"grant_type": "client_credentials", "scope": grant, "client_id": OIN_A}
    for _ in range(3):
        answer = provider.token(form, peer=group[OIN_A])
        body = assert_fsc_error(answer, 503, HSM_UNAVAILABLE)
        assert answer.headers["Retry-After"] == "5"
        assert "cannot sign now" in body["message"]
    assert key_watch.failures() == {"signature": 3}


def test_accepting_a_contract_while_the_token_is_gone(
    provider: Api, connection: dict[str, Any], group: Group, key_watch: watch.KeyWatch
) -> None:
    result = provider.post_contract(connection, sign(connection, group[OIN_A]), peer=group[OIN_A])
    assert result.status_code == 201, result.text
    provider.service.signer = TokenGone(provider.service.signer)
    with pytest.raises(HsmError):
        provider.service.sign(hash_of(connection), SignatureType.ACCEPT)
    assert provider.service.get(hash_of(connection)).state != "valid"
