"""Password hashes for local accounts: scrypt (RFC 7914) from the standard library.

A hash is stored as ``scrypt$<n>$<r>$<p>$<salt>$<key>`` (base64url salt and key), so the cost
can be raised later: old hashes keep verifying with their own parameters and
:func:`needs_rehash` says when to store a new one at the next login. Each user has a random
16-byte salt; keys are compared in constant time.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SCHEME = "scrypt"
N, R, P = 2**14, 8, 1  # at least OWASP's minimum for scrypt; ~16 MiB and ~50 ms per hash
SALT_BYTES = 16
KEY_BYTES = 32
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # hashing a megabyte "password" is a denial of service
_MAXMEM = 256 * 1024 * 1024


@dataclass(frozen=True)
class Parameters:
    n: int = N
    r: int = R
    p: int = P


DEFAULT = Parameters()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, params: Parameters, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=_MAXMEM,
        dklen=length,
    )


def check_password_policy(password: str) -> None:
    """Refuse passwords that are too short or too long (ValueError, with the reason)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"a password has at most {MAX_PASSWORD_LENGTH} characters")


def hash_password(password: str, params: Parameters = DEFAULT) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    key = _derive(password, salt, params, KEY_BYTES)
    return f"{SCHEME}${params.n}${params.r}${params.p}${_b64(salt)}${_b64(key)}"


def _parse(stored: str) -> tuple[Parameters, bytes, bytes]:
    scheme, n, r, p, salt, key = stored.split("$")
    if scheme != SCHEME:
        raise ValueError(f"unknown password hash scheme {scheme!r}")
    return Parameters(int(n), int(r), int(p)), _unb64(salt), _unb64(key)


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time comparison of the keys)."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        params, salt, key = _parse(stored)
    except ValueError:
        return False
    return hmac.compare_digest(_derive(password, salt, params, len(key)), key)


def needs_rehash(stored: str, params: Parameters = DEFAULT) -> bool:
    try:
        found, _, _ = _parse(stored)
    except ValueError:
        return True
    return (found.n, found.r, found.p) < (params.n, params.r, params.p)


@functools.cache
def dummy_hash() -> str:
    """Verified against when a username is unknown, so that a login takes as long either way
    and the response time does not tell which accounts exist."""
    return hash_password(secrets.token_urlsafe(16))


def generate_password() -> str:
    """A random password for a new account (24 characters, 144 bits)."""
    return secrets.token_urlsafe(18)
