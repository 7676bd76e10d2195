"""Clear OpenSSL's per-thread error queue before every TLS operation.

OpenSSL requires the thread's error queue to be empty before an SSL I/O call, or
``SSL_get_error`` misreports the result (SSL_read(3), SSL_get_error(3)). CPython does not
clear it. pkcs11-provider 1.0 (Debian bookworm-backports) pushes a spurious
``pkcs11: General Error ... Objects pool in inconsistent state`` when it frees a key object
that is not in its pool (it does so when a connection's peer key is released). In a thread that
serves many connections (every asyncio worker), that stale entry then fails the next, unrelated
connection with ``SSLError: General Error (_ssl.c:2580)``; the prototype saw ~1% of requests
fail this way. Contexts built by ``appliance.tls.context`` hand out the classes below, which
clear the queue first, as OpenSSL documents.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ssl
from typing import Any

_libcrypto = ctypes.CDLL(ctypes.util.find_library("crypto") or "libcrypto.so.3")
_libcrypto.ERR_clear_error.restype = None
_libcrypto.ERR_clear_error.argtypes = []
_libcrypto.ERR_peek_error.restype = ctypes.c_ulong
_libcrypto.ERR_peek_error.argtypes = []
_libcrypto.OpenSSL_version.restype = ctypes.c_char_p
_libcrypto.OpenSSL_version.argtypes = [ctypes.c_int]

clear_error_queue = _libcrypto.ERR_clear_error


def pending_error() -> int:
    """The oldest error code in this thread's queue (0 when empty); for tests."""
    return int(_libcrypto.ERR_peek_error())


def same_library_as_ssl() -> bool:
    """True when ctypes found the libcrypto that Python's ssl module uses."""
    return bool(_libcrypto.OpenSSL_version(0).decode() == ssl.OPENSSL_VERSION)


class CleanSSLObject(ssl.SSLObject):
    """SSLObject (asyncio, uvloop) that starts every operation with an empty error queue."""

    def do_handshake(self) -> None:
        clear_error_queue()
        super().do_handshake()

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        clear_error_queue()
        return super().read(len, buffer)

    def write(self, data: Any) -> int:
        clear_error_queue()
        return super().write(data)

    def unwrap(self) -> None:
        clear_error_queue()
        super().unwrap()


class CleanSSLSocket(ssl.SSLSocket):
    """SSLSocket (blocking clients, threads) with the same guarantee."""

    def do_handshake(self, block: bool = False) -> None:
        clear_error_queue()
        super().do_handshake(block)

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        clear_error_queue()
        return super().read(len, buffer)

    def write(self, data: Any) -> int:
        clear_error_queue()
        return super().write(data)

    def send(self, data: Any, flags: int = 0) -> int:
        clear_error_queue()
        return super().send(data, flags)

    def unwrap(self) -> Any:
        clear_error_queue()
        return super().unwrap()


def install(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.sslobject_class = CleanSSLObject
    ctx.sslsocket_class = CleanSSLSocket
    return ctx
