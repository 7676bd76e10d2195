"""Issue an access token the way the inway's own Manager does, with the key in its HSM.

Run in a fresh interpreter with the appliance's SoftHSM environment (SOFTHSM2_CONF):
``python issue_token.py CONFIG`` reads a JSON request from stdin::

    {"outway_peer_id": ..., "outway_public_key_thumbprint": ..., "service": ...,
     "inway_address": ..., "client_certificate_thumbprint": ..., "lifetime_seconds": 300,
     "group_id": "...", "age_seconds": 0}

builds a one-grant connection contract, the claims (appliance.manager.contracts.tokens), signs
them with Pkcs11Signer in the token, and prints the JWT. ``age_seconds`` issues it that long
ago (an expired token: more than its lifetime). ``{"tokens": [request, ...]}`` prints a JSON
list of tokens, one HSM login for all.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from appliance.config import SluisConfig, load_config
from appliance.hsm.signer import Pkcs11Signer
from appliance.manager.contracts.model import Contract
from appliance.manager.contracts.tokens import build_access_token_claims, issue_access_token
from appliance.manager.service import load_certificates
from appliance.tls.peer import PeerIdentity


def claims_for(config: SluisConfig, issuer: str, request: dict[str, Any]) -> dict[str, Any]:
    now = datetime.now(UTC) - timedelta(seconds=request.get("age_seconds", 0))
    stamp = int(now.timestamp())
    group_id = request.get("group_id") or (config.inway.group_id if config.inway else "")
    contract = Contract.from_json(
        {
            "iv": str(uuid.uuid4()),
            "group_id": group_id,
            "validity": {"not_before": stamp - 60, "not_after": stamp + 3600},
            "grants": [
                {
                    "data": {
                        "type": "GRANT_TYPE_SERVICE_CONNECTION",
                        "outway": {
                            "peer_id": request["outway_peer_id"],
                            "public_key_thumbprint": request["outway_public_key_thumbprint"],
                        },
                        "service": {
                            "type": "SERVICE_TYPE_SERVICE",
                            "peer_id": issuer,
                            "name": request["service"],
                        },
                    }
                }
            ],
            "hash_algorithm": "HASH_ALGORITHM_SHA3_512",
            "created_at": stamp - 60,
        }
    )
    return build_access_token_claims(
        contract,
        contract.grants[0],
        issuer_peer_id=issuer,
        inway_address=request["inway_address"],
        client_certificate_thumbprint=request["client_certificate_thumbprint"],
        now=now,
        lifetime_seconds=request.get("lifetime_seconds", 300),
    )


def main() -> None:
    config = load_config(Path(sys.argv[1]))
    request = json.load(sys.stdin)
    own = load_certificates(config.tls.certificate_chain)[0]
    own_der = own.public_bytes(Encoding.DER)
    issuer = PeerIdentity.from_der(own_der).peer_id
    batch = request.get("tokens", [request])
    with Pkcs11Signer(config.hsm) as signer:
        tokens = [
            issue_access_token(claims_for(config, issuer, one), signer, own_der) for one in batch
        ]
    print(json.dumps(tokens) if "tokens" in request else tokens[0])


if __name__ == "__main__":
    main()
