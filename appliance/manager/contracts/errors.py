"""FSC Manager error codes and the error that carries one to the HTTP layer.

The codes are manager.yaml's ``managerErrorCode`` (READING.md item 6: the machine-readable
document wins over the prose table) plus two of Sluis's own for what the specification gives
no code: content that breaks the schema or a validation rule without a dedicated code, and a
signer's certificate that cannot be fetched at the moment (try again).
"""

from __future__ import annotations

from enum import StrEnum

from appliance.errors import SluisError


class ErrorCode(StrEnum):
    INCORRECT_GROUP_ID = "ERROR_CODE_INCORRECT_GROUP_ID"
    PEER_NOT_PART_OF_CONTRACT = "ERROR_CODE_PEER_NOT_PART_OF_CONTRACT"
    SIGNATURE_CONTRACT_CONTENT_HASH_MISMATCH = "ERROR_CODE_SIGNATURE_CONTRACT_CONTENT_HASH_MISMATCH"
    PEER_CERTIFICATE_VERIFICATION_FAILED = "ERROR_CODE_PEER_CERTIFICATE_VERIFICATION_FAILED"
    PEER_ID_SIGNATURE_MISMATCH = "ERROR_CODE_PEER_ID_SIGNATURE_MISMATCH"
    SIGNATURE_VERIFICATION_FAILED = "ERROR_CODE_SIGNATURE_VERIFICATION_FAILED"
    GRANT_COMBINATION_NOT_ALLOWED = "ERROR_CODE_GRANT_COMBINATION_NOT_ALLOWED"
    URL_PATH_CONTENT_HASH_MISMATCH = "ERROR_CODE_URL_PATH_CONTENT_HASH_MISMATCH"
    UNKNOWN_HASH_ALGORITHM_HASH = "ERROR_CODE_UNKNOWN_HASH_ALGORITHM_HASH"
    UNKNOWN_ALGORITHM_SIGNATURE = "ERROR_CODE_UNKNOWN_ALGORITHM_SIGNATURE"
    INCORRECT_PUBLIC_KEY_THUMBPRINT = "ERROR_CODE_INCORRECT_PUBLIC_KEY_THUMBPRINT"
    # Sluis's own: manager.yaml has no code for a malformed or rule-breaking contract.
    CONTRACT_INVALID = "ERROR_CODE_CONTRACT_INVALID"
    # Sluis's own, with 503: the signer's certificate is unknown here and its Manager could not
    # be asked for it just now. A 4xx would make the sender give up for long (it is a refusal).
    SIGNER_CERTIFICATE_UNAVAILABLE = "ERROR_CODE_SIGNER_CERTIFICATE_UNAVAILABLE"


# The prose table's statuses; manager.yaml lists only the certificate error under 400.
# CONTRACT_INVALID is 422 for a broken rule and 400 (passed explicitly) for a broken schema.
HTTP_STATUS: dict[str, int] = {code.value: 422 for code in ErrorCode}
HTTP_STATUS[ErrorCode.PEER_CERTIFICATE_VERIFICATION_FAILED] = 400


class ContractError(SluisError):
    """A contract or signature the Manager refuses, with the FSC code and HTTP status to send."""

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status if status is not None else HTTP_STATUS.get(code, 422)
