"""A cross-process lock around token logins.

SoftHSM2's file store rewrites ``token.object`` on every C_Login; two processes logging in at
the same moment have truncated it to zero bytes and lost the token. Every code path of Sluis
that logs in (python-pkcs11 sessions, and the OpenSSL provider when a worker loads the TLS key)
holds this lock. Real HSMs do not need it, and it costs one flock per worker start.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# flock is per open file description, so threads of one process need their own guard.
_THREAD_LOCK = threading.RLock()


@contextmanager
def login_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the duration of a login."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCK:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o660)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
