"""The HSM's figures (issue 20): operations on the token by kind, their latency and errors, and
whether the organisation key is usable.

Series (summed over the component's workers, ``appliance.metrics.registry``)::

    sluis_hsm_operations_total{operation,result}      operation: sign, login; result: ok or
                                                      the error (HsmError, WrongPinError, ...)
    sluis_hsm_operation_duration_seconds{operation}   histogram
    sluis_hsm_key_usable                              1 when every live worker's last readiness
                                                      check found the key usable, else 0

Importing this module makes it the observer of ``appliance.hsm.observe`` in this process
(the readiness checks of ``appliance.metrics.health`` import it). TLS handshakes that the key
signs inside OpenSSL are not counted here (pkcs11-provider gives no hook); their failures show
as ``sluis_hsm_key_usable 0`` and in the log (``appliance.hsm.watch``).
"""

from __future__ import annotations

from appliance.hsm import observe
from appliance.metrics.client import Counter, Gauge, Histogram

OPERATIONS = Counter(
    "sluis_hsm_operations",
    "Operations on the HSM token by kind (sign, login) and result (ok, or the error).",
    ["operation", "result"],
)
DURATION = Histogram(
    "sluis_hsm_operation_duration_seconds",
    "Time an operation on the HSM token took, failures included.",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
KEY_USABLE = Gauge(
    "sluis_hsm_key_usable",
    "1 when the organisation key was usable at the last readiness check of every live worker.",
    multiprocess_mode="livemin",
)


def record(operation: str, seconds: float, error: str | None) -> None:
    OPERATIONS.labels(operation, error or "ok").inc()
    DURATION.labels(operation).observe(seconds)


def key_usable(usable: bool) -> None:
    KEY_USABLE.set(1 if usable else 0)


observe.set_observer(record)
