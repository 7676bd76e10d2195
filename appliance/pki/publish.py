"""A read-only HTTP server for the demo CA's public files (CA certificates and CRLs).

Plain HTTP on purpose: like PKIoverheid distribution points, everything served is public and
signed, and a TLS-protected CRL URL would need a CRL check of its own to be trusted.
"""

from __future__ import annotations

import email.utils
import logging
import re
import socket
import stat
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from appliance.errors import SluisError

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    ".crl": "application/pkix-crl",
    ".pem": "application/x-pem-file",
}

# One path component, no leading dot (hides temporary files), no separators.
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class PublishError(SluisError):
    """The public directory is missing or the server cannot listen."""


class _PublicFileHandler(BaseHTTPRequestHandler):
    public_dir: Path
    server_version = "sluis-pki"
    sys_version = ""
    # Drop idle clients so they cannot tie up threads.
    timeout = 10

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def _refuse_method(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    def _not_found(self, send_body: bool) -> None:
        body = b"not found\n"
        self.send_response(HTTPStatus.NOT_FOUND)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _resolve(self) -> tuple[Path, str] | None:
        raw = urllib.parse.urlsplit(self.path).path
        name = urllib.parse.unquote(raw)
        if not name.startswith("/"):
            return None
        name = name[1:]
        if not _FILE_NAME.match(name) or ".." in name:
            return None
        content_type = CONTENT_TYPES.get(Path(name).suffix)
        if content_type is None:
            return None
        path = self.public_dir / name
        try:
            # lstat: a symlink planted in public/ must not expose files elsewhere.
            if not stat.S_ISREG(path.lstat().st_mode):
                return None
        except OSError:
            return None
        return path, content_type

    def _serve(self, *, send_body: bool) -> None:
        found = self._resolve()
        if found is None:
            self._not_found(send_body)
            return
        path, content_type = found
        try:
            # Files are replaced atomically, so one read sees one consistent version.
            data = path.read_bytes()
            mtime = path.stat().st_mtime
        except OSError:
            self._not_found(send_body)
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Last-Modified", email.utils.formatdate(mtime, usegmt=True))
        self.send_header("Cache-Control", "max-age=300")
        self.end_headers()
        if send_body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), format % args)


def serve_public(directory: Path, host: str, port: int) -> ThreadingHTTPServer:
    """Bind a server for ``directory/public``; the caller runs ``serve_forever``."""
    public_dir = (Path(directory) / "public").resolve()
    if not public_dir.is_dir():
        raise PublishError(f"{public_dir} does not exist; run 'sluis pki init' first")

    handler = type("PublicFileHandler", (_PublicFileHandler,), {"public_dir": public_dir})
    server_class = type(
        "PublicServer",
        (ThreadingHTTPServer,),
        {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET},
    )
    try:
        server: ThreadingHTTPServer = server_class((host, port), handler)
    except OSError as exc:
        raise PublishError(f"cannot listen on {host}:{port}: {exc}") from exc
    return server
