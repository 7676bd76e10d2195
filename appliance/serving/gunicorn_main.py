"""``python -m appliance.serving.gunicorn_main``: ``python -m gunicorn`` with Sluis' master.

The same command line and configuration as gunicorn's own runner; only the arbiter differs:
:class:`~appliance.serving.arbiter.SluisArbiter`, whose HUP keeps the old workers serving until
the new ones do. ``sluis serve`` (``appliance.serving.launch``) execs this module.
"""

from __future__ import annotations

import sys

from gunicorn.app.base import BaseApplication
from gunicorn.app.wsgiapp import WSGIApplication

from appliance.serving.arbiter import SluisArbiter

MODULE = "appliance.serving.gunicorn_main"


class _RunsSluisArbiter(BaseApplication):  # type: ignore[misc]
    # Placed between gunicorn's Application and BaseApplication in the MRO (see below), so that
    # Application.run (print/check config, daemon, pythonpath) still runs first and then this,
    # in place of BaseApplication.run, which hard-codes gunicorn's Arbiter.
    def run(self) -> None:
        try:
            arbiter = SluisArbiter(self)
            # USR2 re-executes the master with these arguments: run this module again, not
            # gunicorn's (sys.argv[0] is this file's path under ``-m``).
            arbiter.START_CTX["args"] = [sys.executable, "-m", MODULE, *sys.argv[1:]]
            arbiter.run()
        except RuntimeError as e:  # as BaseApplication.run
            print(f"\nError: {e}\n", file=sys.stderr)
            sys.stderr.flush()
            sys.exit(1)


class SluisApplication(WSGIApplication, _RunsSluisArbiter):  # type: ignore[misc]
    """gunicorn's WSGIApplication (it loads ASGI apps for our worker all the same).

    MRO: SluisApplication, WSGIApplication, Application, _RunsSluisArbiter, BaseApplication.
    """


def main() -> None:
    SluisApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog=MODULE).run()


if __name__ == "__main__":
    main()
