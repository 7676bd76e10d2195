"""The "PEM URI" key file: a PEM that names the HSM key instead of containing it.

OpenSSL's pkcs11-provider decodes a PEM block labelled ``PKCS#11 PROVIDER URI`` whose DER body
is ``SEQUENCE { desc VisibleString "PKCS#11 Provider URI v1.0", uri UTF8String <uri> }``.
With it, the stock ``ssl.SSLContext.load_cert_chain(cert, keyfile)`` signs inside the token.
The desc must be a VisibleString: a UTF8String desc does not load.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

PEM_LABEL = "PKCS#11 PROVIDER URI"
DESCRIPTION = b"PKCS#11 Provider URI v1.0"


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(value)) + value


def encode_key_reference(uri: str) -> str:
    """Return the PEM text that references the key at ``uri`` (a ``pkcs11:`` URI)."""
    if not uri.startswith("pkcs11:"):
        raise ValueError(f"not a PKCS#11 URI: {uri!r}")
    der = _tlv(0x30, _tlv(0x1A, DESCRIPTION) + _tlv(0x0C, uri.encode("utf-8")))
    b64 = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return "\n".join([f"-----BEGIN {PEM_LABEL}-----", *lines, f"-----END {PEM_LABEL}-----", ""])


def decode_key_reference(pem: str) -> str:
    """Return the ``pkcs11:`` URI inside a PEM URI file."""
    begin, end = f"-----BEGIN {PEM_LABEL}-----", f"-----END {PEM_LABEL}-----"
    if begin not in pem or end not in pem:
        raise ValueError("not a PKCS#11 provider URI PEM")
    der = base64.b64decode(pem.split(begin, 1)[1].split(end, 1)[0])
    if der[0] != 0x30:
        raise ValueError("PEM URI body is not a SEQUENCE")
    pos = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    if der[pos] != 0x1A:
        raise ValueError("PEM URI description is not a VisibleString")
    pos += 2 + der[pos + 1]
    if der[pos] != 0x0C:
        raise ValueError("PEM URI uri is not a UTF8String")
    length, pos = der[pos + 1], pos + 2
    if length & 0x80:
        n = length & 0x7F
        length, pos = int.from_bytes(der[pos : pos + n], "big"), pos + n
    return der[pos : pos + length].decode("utf-8")


def write_key_reference(path: Path, uri: str) -> None:
    """Write the PEM URI file (it holds no secret, but only the service needs to read it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as fh:
        fh.write(encode_key_reference(uri))
    os.replace(tmp, path)
