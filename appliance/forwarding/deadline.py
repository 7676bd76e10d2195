"""The outway's deadline, sent with the request, so that the inway's own timeouts fire first.

The outway waits ``read_timeout_seconds`` for the inway's answer; the inway waits for its log
record and then for the service. When the inway waits as long as the outway or longer (both
30 s by default), the outway gives up first and the application hears
``ERROR_CODE_INWAY_UNREACHABLE`` while the truth was a hung service
(``ERROR_CODE_SERVICE_UNREACHABLE``) or a log that could not be written
(``TRANSACTION_LOG_WRITE_ERROR``) at the inway (issue 16).

Timeouts that nest in the configuration would fix that only where one person configures both
ends, and the outway and the inway belong to different organisations: neither knows the
other's settings. So the outway says how long it waits, in ``Sluis-Timeout`` (seconds, relative:
the two appliances' clocks are not compared), and a Sluis inway answers within that, less a
margin for the way back: its log write and its wait for the service's answer share what is
left. The inway's own timeouts still apply when they are shorter, and when the header is
absent (another implementation's outway). ``Sluis-*`` headers never reach a service.

Like the read timeout, the outway's wait counts from the end of the request body, and so does
the inway's wait for the service's answer: a long upload does not use up the deadline.
"""

from __future__ import annotations

import math

TIMEOUT_HEADER = "Sluis-Timeout"
MARGIN_SECONDS = 1.0  # the most kept back for the answer's way back to the outway
MARGIN_SHARE = 0.1  # ... or this share of a short timeout


def timeout_header(read_timeout: float) -> tuple[str, str]:
    """The outway's header: how long it waits for the inway's answer."""
    return TIMEOUT_HEADER, f"{read_timeout:g}"


def answer_deadline(value: str | None, now: float) -> float | None:
    """The inway's deadline (``now``'s clock) for the outway's ``Sluis-Timeout``; None when
    there is none or it is not a positive number of seconds."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return now + seconds - min(MARGIN_SECONDS, seconds * MARGIN_SHARE)
