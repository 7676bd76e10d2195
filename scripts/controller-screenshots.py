#!/usr/bin/env python3
"""Screenshots of the controller's main pages for docs/controller/*.png.

Runs the browser test suite (a real Group: three appliances with SoftHSM tokens, their
Managers, and one controller under gunicorn) with SLUIS_CONTROLLER_SCREENSHOTS set; the test
writes the pictures. Needs Playwright (``pip install playwright``) and Debian's chromium.

    .venv/bin/python scripts/controller-screenshots.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    env = {**os.environ, "SLUIS_CONTROLLER_SCREENSHOTS": "1"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        str(ROOT / "tests" / "controller" / "test_controller_browser.py"),
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, check=False)
    if result.returncode == 0:
        for picture in sorted((ROOT / "docs" / "controller").glob("*.png")):
            print(picture.relative_to(ROOT))
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
