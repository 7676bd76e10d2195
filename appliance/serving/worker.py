"""The gunicorn worker every Sluis HTTP component runs in.

Server model: gunicorn (process management, graceful reloads) with an asyncio worker per core
running uvicorn's httptools protocol on uvloop, and Falcon's ASGI app. The prototype measured
this model at 2.5x the throughput of gunicorn's threaded worker for the proxy data path, which
is I/O bound (docs/tls.md, "the server model").

The TLS context is built here, in the worker, after fork: PKCS#11 sessions do not survive fork,
and a context built in the master fails every handshake in the workers. The master makes no TLS
call at all (``preload_app`` stays off).

A worker that cannot start (the HSM token is gone, the certificate unreadable, the app's set-up
fails) says why to the master in one line (``appliance.serving.readiness``), its traceback only
at DEBUG, and exits with ``WORKER_BOOT_RETRY``: the master starts the next one after a back-off
(``appliance.serving.arbiter``) instead of halting or retrying twice a second (an error in
``sluis.toml`` still halts the master: waiting does not fix it). A worker whose
master is gone (SIGKILLed) notices within a second and stops as on SIGTERM: it finishes its
requests in flight, at most ``graceful_timeout`` seconds, and frees the port.
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
from gunicorn.errors import AppImportError
from gunicorn.workers.base import Worker
from uvicorn.config import Config
from uvicorn.server import Server

from appliance.config import load_config
from appliance.errors import ConfigurationError
from appliance.hsm import watch
from appliance.hsm.errors import HsmError
from appliance.hsm.token import find_token
from appliance.serving.protocol import HeadLimits, PeerCertificateProtocol
from appliance.serving.readiness import report_boot_failure, report_serving
from appliance.serving.wire import wire_errors_for
from appliance.tls.context import TlsSetupError, server_context

CONFIG_ENV = "SLUIS_CONFIG"
# "mtls" (default): mutual TLS with the HSM key. "plain": plain HTTP, only for the outway,
# which listens on the internal network for the organisation's own applications.
LISTENER_ENV = "SLUIS_LISTENER"
# The exit status of a worker that could not start and told the master why (EX_TEMPFAIL):
# gunicorn's own WORKER_BOOT_ERROR would halt the master.
WORKER_BOOT_RETRY = 75
# uvicorn's main loop ticks ten times a second; the master is looked for once a second.
_PARENT_CHECK_TICKS = 10

log = logging.getLogger("sluis")


class _BootFailed(Exception):
    pass


class _Server(Server):
    def __init__(self, config: Config, worker_age: int, master_pid: int, grace: float) -> None:
        super().__init__(config=config)
        self._worker_age = worker_age
        self._master_pid = master_pid
        self._grace = grace

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            log.info("worker %s: serving", os.getpid())
            # The master's side-by-side reload (appliance.serving.arbiter) waits for this.
            report_serving(self._worker_age)

    async def on_tick(self, counter: int) -> bool:
        # A worker outliving its master (SIGKILLed) would serve on unsupervised, holding the
        # port: nobody would reload, replace or stop it. Orphans are re-parented.
        if (
            counter % _PARENT_CHECK_TICKS == 0
            and not self.should_exit
            and os.getppid() != self._master_pid
        ):
            log.warning(
                "worker %s: master %s is gone; stopping (requests in flight get %g s)",
                os.getpid(),
                self._master_pid,
                self._grace,
            )
            # No master will SIGKILL us after graceful_timeout: bound the drain here.
            self.config.timeout_graceful_shutdown = int(self._grace)
            self.should_exit = True
        return await super().on_tick(counter)


class SluisWorker(Worker):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._server: _Server | None = None  # once run() made it
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
        try:
            ctx = server_context(sluis.tls, sluis.hsm)
        except HsmError as exc:  # e.g. SoftHSM without its token directory
            raise _BootFailed(f"HSM token not usable ({exc})") from exc
        except TlsSetupError as exc:
            # OpenSSL says only that the key cannot be loaded; name the cause when it is the
            # token (gone, moved, unreadable), which is what the operator has to fix.
            try:
                find_token(sluis.hsm)
            except HsmError as missing:
                raise _BootFailed(f"HSM token not found ({missing})") from exc
            raise
        self.log.info("worker %s: TLS context ready (key %s)", os.getpid(), sluis.hsm.pkcs11_uri())
        return ctx

    def _replace_for_the_key(self) -> None:
        # From the watch's thread: uvicorn's loop sees the flag within a tick, finishes the
        # requests in flight and exits; the master starts a fresh worker at once.
        if self._server is not None:
            self._server.should_exit = True

    def init_signals(self) -> None:
        # uvicorn's Server installs its own handlers; keep gunicorn's USR1 (log reopen).
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.siginterrupt(signal.SIGUSR1, False)

    def init_process(self) -> None:
        try:
            super().init_process()  # loads the app, then run(): serves until told to stop
        except (SystemExit, AppImportError):
            raise  # AppImportError: the code itself is broken; gunicorn halts, as before
        except ConfigurationError as exc:
            # Waiting does not fix sluis.toml: halt the master, as gunicorn does, so that
            # `sluis serve` says so and exits (systemd restarts it, reading the file again).
            log.error("worker %s: cannot start: %s", os.getpid(), exc)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        except Exception as exc:
            if self._server is not None and self._server.started:
                raise  # a crash after it served: replaced at once, as always
            # One line to the master, which logs it once per state and retries with back-off;
            # a traceback per attempt (twice a second) said nothing more.
            log.debug("worker %s: cannot start", os.getpid(), exc_info=True)
            report_boot_failure(self.age, str(exc) or type(exc).__name__)
            sys.exit(WORKER_BOOT_RETRY)

    async def _serve(self) -> None:
        # The token goes away: handshakes and readiness checks fail, and this process's module
        # stays broken after the token is back; the watch replaces the worker then.
        watch.install(
            watch.KeyWatch(
                load_config(Path(os.environ[CONFIG_ENV])).hsm,
                watch.probe_in_fresh_process(Path(os.environ[CONFIG_ENV])),
                self._replace_for_the_key,
            )
        )
        self.config.app = self.wsgi
        server = self._server = _Server(
            config=self.config,
            worker_age=self.age,
            master_pid=self.ppid,
            grace=self.cfg.graceful_timeout,
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGQUIT, self.handle_exit, signal.SIGQUIT, None)
        try:
            await server.serve(sockets=self.sockets)
        except SystemExit as exc:
            if server.started:
                raise
            # uvicorn exits this way when the app's lifespan startup failed (it logged why).
            raise _BootFailed(f"the application's startup failed (exit {exc.code})") from None
        if not server.started and not server.should_exit:
            raise _BootFailed("the server did not start")

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
