"""``python -m appliance.hsm.probe <sluis.toml>``: is the organisation key usable from a fresh
process? Exit 0 if so, else 1 with the reason on the last line of stdout.

Used by :mod:`appliance.hsm.watch`: a process whose module lost the token cannot tell by
itself when the token is back (its module stays broken), a fresh one can. It only checks
(:func:`appliance.hsm.status.token_status` without re-initialising): a session, the key, random
bytes from the device; no signature, no change on the token.
"""

from __future__ import annotations

import sys
from pathlib import Path

from appliance.config import load_config
from appliance.errors import SluisError
from appliance.hsm.status import token_status


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m appliance.hsm.probe <sluis.toml>")
        return 2
    try:
        settings = load_config(Path(argv[0])).hsm
        status = token_status(settings, recover=False)
    except SluisError as exc:
        print(exc)
        return 1
    if not status.usable:
        print(status.reason)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
