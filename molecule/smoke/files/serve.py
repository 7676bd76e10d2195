"""Answers every GET with the greeting that systemd handed over as a credential."""

import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

GREETING = (Path(os.environ["CREDENTIALS_DIRECTORY"]) / "greeting").read_bytes()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(GREETING)))
        self.end_headers()
        self.wfile.write(GREETING)


HTTPServer(("", int(sys.argv[1])), Handler).serve_forever()
