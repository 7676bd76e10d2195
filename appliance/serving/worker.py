"""The gunicorn worker every Sluis HTTP component runs in.

Server model: gunicorn (process management, graceful reloads) with an asyncio worker per core
running uvicorn's httptools protocol on uvloop, and Falcon's ASGI app. The prototype measured
this model at 2.5x the throughput of gunicorn's threaded worker for the proxy data path, which
is I/O bound (docs/tls.md, "the server model").

The TLS context is built here, in the worker, after fork: PKCS#11 sessions do not survive fork,
and a context built in the master fails every handshake in the workers. The master makes no TLS
call at all (``preload_app`` stays off).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker
from uvicorn.config import Config
from uvicorn.server import Server

from appliance.config import load_config
from appliance.serving.protocol import HeadLimits, PeerCertificateProtocol
from appliance.serving.readiness import report_serving
from appliance.serving.wire import wire_errors_for
from appliance.tls.context import server_context

CONFIG_ENV = "SLUIS_CONFIG"
# "mtls" (default): mutual TLS with the HSM key. "plain": plain HTTP, only for the outway,
# which listens on the internal network for the organisation's own applications.
LISTENER_ENV = "SLUIS_LISTENER"


class _Server(Server):
    def __init__(self, config: Config, worker_age: int) -> None:
        super().__init__(config=config)
        self._worker_age = worker_age

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            logging.getLogger("sluis").info("worker %s: serving", os.getpid())
            # The master's side-by-side reload (appliance.serving.arbiter) waits for this.
            report_serving(self._worker_age)


class SluisWorker(Worker):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, target in (
            ("uvicorn.error", self.log.error_log),
            ("uvicorn.access", self.log.access_log),
            ("sluis", self.log.error_log),
        ):
            logger = logging.getLogger(name)
            logger.handlers = target.handlers
            logger.setLevel(target.level)
            logger.propagate = False
        # [http]: the limits on request heads and the idle time, for every listener.
        limits = self._limits = HeadLimits.from_settings(
            load_config(Path(os.environ[CONFIG_ENV])).http
        )
        self.config = Config(
            app=None,  # type: ignore[arg-type]  # gunicorn's loaded app, set in _serve()
            log_config=None,
            loop="uvloop",
            # Errors written before any app runs, in the format of the component served.
            http=PeerCertificateProtocol.configured(
                limits, wire_errors_for(str(getattr(self.app, "app_uri", None) or ""))
            ),
            lifespan="auto",
            server_header=False,
            # The client address is the socket's: no X-Forwarded-For from a local process may
            # rewrite it (uvicorn trusts it from 127.0.0.1 by default), and one less layer per
            # request.
            proxy_headers=False,
            timeout_keep_alive=int(limits.idle_timeout),
            timeout_notify=self.timeout,
            callback_notify=self.callback_notify,
            limit_max_requests=self.max_requests or None,
            backlog=self.cfg.backlog,
            ssl_context_factory=(
                None if os.environ.get(LISTENER_ENV) == "plain" else self._build_ssl_context
            ),
        )

    def _build_ssl_context(
        self, config: Config, default: Callable[[], ssl.SSLContext]
    ) -> ssl.SSLContext:
        # Runs inside Server.serve(), i.e. in this worker process after fork.
        sluis = load_config(Path(os.environ[CONFIG_ENV]))
        ctx = server_context(sluis.tls, sluis.hsm)
        self.log.info("worker %s: TLS context ready (key %s)", os.getpid(), sluis.hsm.pkcs11_uri())
        return ctx

    def init_signals(self) -> None:
        # uvicorn's Server installs its own handlers; keep gunicorn's USR1 (log reopen).
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.siginterrupt(signal.SIGUSR1, False)

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = _Server(config=self.config, worker_age=self.age)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGQUIT, self.handle_exit, signal.SIGQUIT, None)
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)

    def run(self) -> None:
        import uvloop

        handshake_timeout = self._limits.head_timeout

        class Loop(uvloop.Loop):
            async def create_server(self, *args: Any, **kwargs: Any) -> Any:
                # uvicorn passes no TLS handshake timeout (uvloop's default is 60 s): a client
                # gets the head timeout for its handshake too.
                if kwargs.get("ssl") is not None:
                    kwargs.setdefault("ssl_handshake_timeout", handshake_timeout)
                return await super().create_server(*args, **kwargs)

        uvloop.run(self._serve(), loop_factory=Loop)

    async def callback_notify(self) -> None:
        self.notify()
