"""Contract content hash and grant hashes, as core "The content hash" and "Grant hash" define.

``$<HashAlgorithm>$<HashType>$<base64url(digest)>``, numbers from the type-mapping tables.
READING.md item 1: the grant's HashType comes from the HashType table (publication 2,
connection 3, delegated connection 4, delegated publication 5), not from the grant type
number that the example in step 8 uses. Item 2: base64url without padding everywhere.
Item 4: the algorithm is read from ``hash_algorithm`` (the steps call it ``algorithm``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from enum import IntEnum
from typing import Any

from appliance.hsm.jws import b64url_encode
from appliance.jcs import canonicalize
from appliance.manager.contracts.errors import ContractError, ErrorCode
from appliance.manager.contracts.model import Contract, Grant, GrantType


class HashType(IntEnum):
    CONTRACT = 1
    SERVICE_PUBLICATION_GRANT = 2
    SERVICE_CONNECTION_GRANT = 3
    DELEGATED_SERVICE_CONNECTION_GRANT = 4
    DELEGATED_SERVICE_PUBLICATION_GRANT = 5


# Type mapping "Hash algorithms": enum name -> (int32, digest function).
HASH_ALGORITHMS: dict[str, tuple[int, Callable[[bytes], Any]]] = {
    "HASH_ALGORITHM_SHA3_512": (1, hashlib.sha3_512),
}

GRANT_HASH_TYPES: dict[GrantType, HashType] = {
    GrantType.SERVICE_PUBLICATION: HashType.SERVICE_PUBLICATION_GRANT,
    GrantType.SERVICE_CONNECTION: HashType.SERVICE_CONNECTION_GRANT,
    GrantType.DELEGATED_SERVICE_CONNECTION: HashType.DELEGATED_SERVICE_CONNECTION_GRANT,
    GrantType.DELEGATED_SERVICE_PUBLICATION: HashType.DELEGATED_SERVICE_PUBLICATION_GRANT,
}


def check_hash_algorithm(name: str) -> None:
    """ContractError ERROR_CODE_UNKNOWN_HASH_ALGORITHM_HASH unless ``name`` is supported."""
    if name not in HASH_ALGORITHMS:
        raise ContractError(
            ErrorCode.UNKNOWN_HASH_ALGORITHM_HASH,
            f"hash algorithm {name!r} is not supported; supported: {', '.join(HASH_ALGORITHMS)}",
        )


# "$<HashAlgorithm>$<HashType>$<digest>": the algorithm number is read before any comparison.
_HASH_TEXT = re.compile(r"\$([0-9]{1,10})\$[0-9]{1,10}\$[A-Za-z0-9_-]+")


def check_hash_text(value: str) -> None:
    """ContractError ERROR_CODE_UNKNOWN_HASH_ALGORITHM_HASH if ``value`` (a content or grant
    hash another peer sent) names a hash algorithm number that is not supported (core error
    table), rather than merely not matching: the peer should learn which of the two it is."""
    match = _HASH_TEXT.fullmatch(value)
    if match is None:
        return  # not a hash at all: the comparison that follows refuses it
    number = int(match[1])
    if number not in {n for n, _ in HASH_ALGORITHMS.values()}:
        raise ContractError(
            ErrorCode.UNKNOWN_HASH_ALGORITHM_HASH,
            f"hash {value!r} names hash algorithm {number}, which is not supported; "
            f"supported: {', '.join(f'{n} ({name})' for name, (n, _) in HASH_ALGORITHMS.items())}",
        )


def _hash(algorithm: str, hash_type: HashType, data: bytes) -> str:
    check_hash_algorithm(algorithm)
    number, function = HASH_ALGORITHMS[algorithm]
    digest: bytes = function(data).digest()
    return f"${number}${int(hash_type)}${b64url_encode(digest)}"


def content_hash(contract: Contract) -> str:
    """The ``contract_content_hash``: the JCS form of the content as received, hashed."""
    return _hash(contract.hash_algorithm, HashType.CONTRACT, canonicalize(contract.content))


def grant_hash(contract: Contract, grant: Grant) -> str:
    """The hash of one grant of ``contract``: content hash + JCS(grant.data), hashed."""
    if grant not in contract.grants:  # identity first, then equality
        raise ValueError("the grant is not one of the contract's grants")
    data = content_hash(contract).encode("ascii") + canonicalize(grant.data)
    return _hash(contract.hash_algorithm, GRANT_HASH_TYPES[grant.type], data)


def grant_hashes(contract: Contract) -> tuple[str, ...]:
    """The hash of every grant, in the contract's grant order."""
    return tuple(grant_hash(contract, grant) for grant in contract.grants)


def find_grant(contract: Contract, wanted: str) -> Grant | None:
    """The grant of ``contract`` whose hash is ``wanted`` (a token request's ``scope``)."""
    for grant in contract.grants:
        if grant_hash(contract, grant) == wanted:
            return grant
    return None


def check_path_hash(contract: Contract, path_hash: str) -> None:
    """The ``{hash}`` of ``/contracts/{hash}/...`` must be the body's content hash."""
    check_hash_text(path_hash)
    actual = content_hash(contract)
    if path_hash != actual:
        raise ContractError(
            ErrorCode.URL_PATH_CONTENT_HASH_MISMATCH,
            f"content hash {path_hash!r} in the URL path does not match the contract "
            f"content hash {actual!r}",
        )
