"""The logging extension's error codes (logging spec "Error response", READING.md item 6: as
written, without the ERROR_CODE_ prefix) and the FSC error responses built from them."""

from __future__ import annotations

import json
import re

import falcon
import falcon.asgi
import falcon.testing
import pytest
from txlogtest import FSC

from appliance.serving.fsc_errors import ErrorDomain, FscError, serialize_error
from appliance.txlog import (
    DuplicateTransactionError,
    InvalidTransactionIdError,
    LogErrorCode,
    TransactionLogClosedError,
    TransactionLogWriteError,
    fsc_error_for,
    invalid_transaction_id,
    missing_transaction_id,
    parse_transaction_id,
    write_error,
)
from appliance.txlog.errors import HTTP_STATUS, log_error


def _spec_tables() -> dict[str, set[tuple[str, int]]]:
    """The Inway's and the Outway's error tables of logging-specifications.md."""
    text = (FSC / "logging-specifications.md").read_text(encoding="utf-8")
    tables: dict[str, set[tuple[str, int]]] = {}
    for component in ("Inway", "Outway"):
        section = text.split(f"\n## {component}\n", 1)[1].split("\n## ", 1)[0]
        rows = re.findall(r"^\|\s*([A-Z_]+)\s*\|\s*(\d{3})\s*\|", section, re.MULTILINE)
        tables[component] = {(code, int(status)) for code, status in rows}
    return tables


def test_the_codes_are_the_specifications() -> None:
    ours = {(code.value, int(HTTP_STATUS[code].split()[0])) for code in LogErrorCode}
    tables = _spec_tables()
    assert tables["Inway"] == tables["Outway"] == ours
    assert ours == {
        ("TRANSACTION_LOG_WRITE_ERROR", 500),
        ("INVALID_LOG_RECORD_ID", 400),
        ("MISSING_LOG_RECORD_ID", 400),
    }


@pytest.mark.parametrize("domain", [ErrorDomain.INWAY, ErrorDomain.OUTWAY])
def test_the_error_responses(domain: ErrorDomain) -> None:
    """Each helper's FscError, served by Falcon with the project's serializer: status, the
    Fsc-Error-Code header and the JSON error object in the gateway's domain."""
    try:
        parse_transaction_id("6f1c1e0e-1b7a-4c57-9d59-0c6a3f0e8a11")
    except InvalidTransactionIdError as exc:
        invalid = exc
    cases: list[tuple[FscError, int, str]] = [
        (write_error(domain), 500, "TRANSACTION_LOG_WRITE_ERROR"),
        (missing_transaction_id(domain), 400, "MISSING_LOG_RECORD_ID"),
        (invalid_transaction_id(domain, "not a UUID"), 400, "INVALID_LOG_RECORD_ID"),
        (
            fsc_error_for(TransactionLogWriteError("disk full"), domain),
            500,
            "TRANSACTION_LOG_WRITE_ERROR",
        ),
        (
            fsc_error_for(TransactionLogClosedError("closed"), domain),
            500,
            "TRANSACTION_LOG_WRITE_ERROR",
        ),
        (fsc_error_for(DuplicateTransactionError("t", "d"), domain), 400, "INVALID_LOG_RECORD_ID"),
        (fsc_error_for(invalid, domain), 400, "INVALID_LOG_RECORD_ID"),
    ]
    for error, status, code in cases:
        app = falcon.asgi.App()
        app.set_error_serializer(serialize_error)

        class Failing:
            async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
                raise error  # noqa: B023

        app.add_route("/", Failing())
        result = falcon.testing.TestClient(app).simulate_get("/")
        assert result.status_code == status, code
        assert result.headers["Fsc-Error-Code"] == code
        body = json.loads(result.text)
        assert body["code"] == code
        assert body["domain"] == domain.value
        assert body["message"]
        # No database detail reaches the other peer.
        assert "disk full" not in body["message"]


def test_the_codes_belong_to_the_gateways() -> None:
    with pytest.raises(ValueError, match="gateways"):
        log_error(LogErrorCode.TRANSACTION_LOG_WRITE_ERROR, ErrorDomain.MANAGER, "x")


def test_a_duplicate_is_a_write_error() -> None:
    """A gateway that catches only TransactionLogWriteError still refuses a duplicate."""
    assert issubclass(DuplicateTransactionError, TransactionLogWriteError)
    assert issubclass(TransactionLogClosedError, TransactionLogWriteError)
