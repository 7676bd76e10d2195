"""One log line for every peer certificate a handshake refuses, naming that certificate.

A refused handshake gives Python only ``SSLCertVerificationError("certificate revoked")``: the
certificate it refused is gone (OpenSSL keeps the peer certificate only once verified), so an
operator could not tell *who* was refused. OpenSSL's verify callback does see it. Python's
``ssl`` offers no callback, so this module sets one on the context's ``SSL_CTX`` with ctypes:
it returns OpenSSL's own verdict unchanged (it never accepts or refuses anything itself) and,
when the verdict is a refusal, logs the failing certificate's subject, serial and issuer and
OpenSSL's reason. Never any content: the line is written during the handshake.

The ``SSL_CTX`` pointer is the first field after the object header of CPython's context object
(``Modules/_ssl.c``: ``PySSLContext``). Before using it the module checks that OpenSSL reports
for that pointer the verify mode and options the Python object reports; if not (another Python
build), it installs nothing and the refusal is still logged, without the certificate.

A *signature* failure (the certificate's or its CRL's) is also what a broken HSM module of this
process looks like: pkcs11-provider verifies the peer's signatures in the token too. Such a
line says so, and is not written at all once this process's key watch knows its key failed
(``appliance.hsm.watch``: its own line says it, once).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import ssl

from cryptography import x509
from cryptography.x509.oid import NameOID

from appliance.hsm import watch

log = logging.getLogger("sluis.tls.refused")

# X509_V_ERR_CERT_SIGNATURE_FAILURE, X509_V_ERR_CRL_SIGNATURE_FAILURE (x509_vfy.h).
_SIGNATURE_FAILURES = frozenset({7, 8})
_OWN_MODULE_HINT = (
    "; a signature check fails so too when this process's own HSM module is broken (the key "
    "watch then says so)"
)

_VerifyCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


def _load() -> tuple[ctypes.CDLL, ctypes.CDLL] | None:
    try:
        libssl = ctypes.CDLL(ctypes.util.find_library("ssl") or "libssl.so.3")
        libcrypto = ctypes.CDLL(ctypes.util.find_library("crypto") or "libcrypto.so.3")
    except OSError:
        return None
    libssl.SSL_CTX_get_verify_mode.restype = ctypes.c_int
    libssl.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
    libssl.SSL_CTX_get_options.restype = ctypes.c_uint64
    libssl.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
    libssl.SSL_CTX_set_verify.restype = None
    libssl.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VerifyCallback]
    libcrypto.X509_STORE_CTX_get_current_cert.restype = ctypes.c_void_p
    libcrypto.X509_STORE_CTX_get_current_cert.argtypes = [ctypes.c_void_p]
    libcrypto.X509_STORE_CTX_get_error.restype = ctypes.c_int
    libcrypto.X509_STORE_CTX_get_error.argtypes = [ctypes.c_void_p]
    libcrypto.X509_STORE_CTX_get_error_depth.restype = ctypes.c_int
    libcrypto.X509_STORE_CTX_get_error_depth.argtypes = [ctypes.c_void_p]
    libcrypto.X509_verify_cert_error_string.restype = ctypes.c_char_p
    libcrypto.X509_verify_cert_error_string.argtypes = [ctypes.c_long]
    libcrypto.i2d_X509.restype = ctypes.c_int
    libcrypto.i2d_X509.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p)]
    return libssl, libcrypto


_LIBS = _load()


def _certificate_der(libcrypto: ctypes.CDLL, cert: int) -> bytes | None:
    length = libcrypto.i2d_X509(cert, None)
    if length <= 0:
        return None
    buffer = ctypes.create_string_buffer(length)
    cursor = ctypes.c_char_p(ctypes.addressof(buffer))
    if libcrypto.i2d_X509(cert, ctypes.byref(cursor)) != length:
        return None
    return buffer.raw


def describe_certificate(der: bytes) -> str:
    """``subject=..., serial=..., issuer=...`` of a DER certificate."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return "an unreadable certificate"
    names = {NameOID.SERIAL_NUMBER: "serialNumber"}
    return (
        f"subject={cert.subject.rfc4514_string(names)}, serial={cert.serial_number:x}, "
        f"issuer={cert.issuer.rfc4514_string(names)}"
    )


def _on_verify(preverify_ok: int, store_ctx: int | None) -> int:
    if preverify_ok:
        return 1
    try:
        assert _LIBS is not None
        assert store_ctx is not None
        libcrypto = _LIBS[1]
        error = libcrypto.X509_STORE_CTX_get_error(store_ctx)
        depth = libcrypto.X509_STORE_CTX_get_error_depth(store_ctx)
        reason = (libcrypto.X509_verify_cert_error_string(error) or b"?").decode("ascii", "replace")
        cert = libcrypto.X509_STORE_CTX_get_current_cert(store_ctx)
        der = _certificate_der(libcrypto, cert) if cert else None
        who = describe_certificate(der) if der else "no certificate"
        hint = ""
        if error in _SIGNATURE_FAILURES:
            keys = watch.current()
            if keys is not None and keys.problem is not None:
                return 0  # this process's key failed: the watch's line says it, once
            hint = _OWN_MODULE_HINT
        log.warning(
            "TLS handshake refused the peer: %s (certificate %d of its chain: %s)%s",
            reason,
            depth,
            who,
            hint,
        )
    except Exception:  # never let logging change a verdict or raise into C
        log.warning("TLS handshake refused the peer (certificate details unavailable)")
    return 0


_CALLBACK = _VerifyCallback(_on_verify)

_PY_VERIFY_MODES = {ssl.CERT_NONE: 0, ssl.CERT_OPTIONAL: 1, ssl.CERT_REQUIRED: 3}


def _ssl_ctx_pointer(ctx: ssl.SSLContext) -> int | None:
    if _LIBS is None:
        return None
    libssl = _LIBS[0]
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not pointer:
        return None
    # Only a pointer for which OpenSSL reports what Python reports is taken to be the SSL_CTX.
    if libssl.SSL_CTX_get_verify_mode(pointer) != _PY_VERIFY_MODES[ctx.verify_mode]:
        return None
    if libssl.SSL_CTX_get_options(pointer) != int(ctx.options):
        return None
    return int(pointer)


def install(ctx: ssl.SSLContext) -> bool:
    """Log refused peer certificates of ``ctx``'s handshakes; False when not possible here.

    Call it last: a later change of ``verify_mode`` keeps the callback in CPython 3.11, but
    keeping the order makes that irrelevant.
    """
    pointer = _ssl_ctx_pointer(ctx)
    if pointer is None:
        log.warning("refused peer certificates will be logged without their subject")
        return False
    assert _LIBS is not None
    _LIBS[0].SSL_CTX_set_verify(pointer, _PY_VERIFY_MODES[ctx.verify_mode], _CALLBACK)
    return True
