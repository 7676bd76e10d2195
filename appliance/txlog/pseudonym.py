"""Pseudonyms for data subjects: HMAC-SHA256 with a secret key that never leaves the appliance.

The transaction log may record *about whom* a request was made (AVG purpose binding), but never
the identifier itself (a BSN, a customer number). :class:`Pseudonymiser` turns an identifier
into a keyed hash: the same subject always gets the same pseudonym on this appliance, so a
privacy officer who has the identifier can find every record about that person (compute the
pseudonym, search for it), while the database, its backups and anything shipped to a SIEM hold
only values that cannot be turned back or recomputed without the key.

The key is at least 32 random bytes, written as hexadecimal in a root-only file
(``/etc/sluis/txlog-pseudonym.key``, mode 0400 or 0600), made once per appliance::

    (umask 077 && openssl rand -hex 32 > /etc/sluis/txlog-pseudonym.key)
    chmod 0400 /etc/sluis/txlog-pseudonym.key

or from Python with :func:`write_key_file`.

A key file readable by group or others, a symlink, or a key shorter than 32 bytes is refused.
Losing the key means old pseudonyms can no longer be matched to new ones; replacing it starts
a new series. Several nodes that share one log must share the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import unicodedata

from appliance.txlog.errors import PseudonymKeyError

KEY_BYTES_MIN = 32
_KEY_FILE_MAX = 4096
# Domain separation: the same key could never produce these values for another purpose.
_CONTEXT = b"sluis txlog data subject v1\x00"


class Pseudonymiser:
    """Keyed, deterministic pseudonyms (64 lower-case hex characters) for data subjects."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) < KEY_BYTES_MIN:
            raise PseudonymKeyError(
                f"the pseudonymisation key must be at least {KEY_BYTES_MIN} bytes"
            )
        self._key = key

    def __repr__(self) -> str:  # never show the key
        return "Pseudonymiser(<key hidden>)"

    @classmethod
    def from_key_file(cls, path: os.PathLike[str] | str) -> Pseudonymiser:
        return cls(read_key_file(path))

    def pseudonymise(self, subject: str, *, kind: str = "") -> str:
        """The pseudonym of ``subject`` (surrounding white space and Unicode form normalised).

        ``kind`` keeps identifiers of different registers apart (``"bsn"``, ``"kvk"``): the
        same digits in two registers give two pseudonyms.
        """
        if not isinstance(subject, str):
            raise TypeError("the data subject identifier must be a string")
        normalised = unicodedata.normalize("NFC", subject.strip())
        if not normalised:
            raise ValueError("the data subject identifier is empty")
        if "\x00" in kind:
            raise ValueError("kind must not contain NUL")
        message = _CONTEXT + kind.encode("utf-8") + b"\x00" + normalised.encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()


def read_key_file(path: os.PathLike[str] | str) -> bytes:
    """The key from a root-only file of hexadecimal text (refusing anything less safe)."""
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise PseudonymKeyError(f"pseudonymisation key file {name} does not exist") from None
    except OSError as exc:
        raise PseudonymKeyError(
            f"pseudonymisation key file {name} cannot be opened: {exc.strerror}"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PseudonymKeyError(f"pseudonymisation key file {name} is not a regular file")
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PseudonymKeyError(
                f"pseudonymisation key file {name} is readable or writable by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); make it 0400 or 0600"
            )
        if info.st_uid not in (0, os.geteuid()):
            raise PseudonymKeyError(
                f"pseudonymisation key file {name} must be owned by root or by this user"
            )
        data = os.read(fd, _KEY_FILE_MAX + 1)
    finally:
        os.close(fd)
    if len(data) > _KEY_FILE_MAX:
        raise PseudonymKeyError(f"pseudonymisation key file {name} is too large")
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise PseudonymKeyError(
            f"pseudonymisation key file {name} must hold the key as hexadecimal text "
            "(openssl rand -hex 32)"
        ) from None
    if len(key) < KEY_BYTES_MIN:
        raise PseudonymKeyError(
            f"pseudonymisation key in {name} has {len(key)} bytes; at least {KEY_BYTES_MIN} needed"
        )
    return key


def write_key_file(path: os.PathLike[str] | str) -> None:
    """Create a new key file (32 random bytes, hexadecimal, mode 0400); never overwrites."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
    try:
        os.fchmod(fd, 0o400)
        os.write(fd, secrets.token_hex(KEY_BYTES_MIN).encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
