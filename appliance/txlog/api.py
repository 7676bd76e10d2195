"""``GET /v1/logs`` (logging.yaml ``getLogs``): the Manager hands out transaction log records.

The caller is another Peer, identified by its verified certificate (``req.context.peer``, set
by :class:`appliance.serving.app.PeerIdentityMiddleware`). It receives only records that name
its Peer ID as source outway, destination service or either delegator (logging specification,
"Providing TransactionLog records"), and only the FSC fields: the local purpose-binding fields
never leave the appliance.

Query parameters: ``cursor``, ``limit`` (1..1000, default 25), ``sort_order``
(``SORT_ORDER_DESCENDING`` by default: newest first), ``after``/``before`` (Unix seconds,
exclusive), ``grant_hash`` and ``service_name`` (``style: form, explode: false``: one
comma-separated value; repeating the parameter works too; a record matching either filter is
returned), and ``transaction_ids``, which makes the other filters and pagination be ignored.

Wire it into the Manager's app with :func:`add_log_routes`, and report
:data:`ENABLED_EXTENSIONS` in the Manager's ``/peer`` answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import falcon
import falcon.asgi

from appliance.serving.fsc_errors import ErrorDomain, FscError
from appliance.tls.peer import PeerIdentity
from appliance.txlog.errors import UnknownCursorError
from appliance.txlog.store import DEFAULT_LIMIT, MAX_LIMIT, MAX_TRANSACTION_IDS, TransactionLog

LOGS_PATH = "/v1/logs"
LOGGING_EXTENSION = "EXTENSION_TRANSACTION_LOGGING"
LOGGING_VERSION = "1.0.0"  # manager.yaml loggingVersion: enum ["1.0.0"]
# The logging extension's entry of manager.yaml ``enabledExtensions`` for ``GET /v1/peer``.
ENABLED_EXTENSIONS: Mapping[str, str] = MappingProxyType({LOGGING_EXTENSION: LOGGING_VERSION})

# The Manager's code for a malformed request (appliance.manager.api.REQUEST_INVALID; repeated
# here so that the Manager's API may import this module without a cycle).
REQUEST_INVALID = "ERROR_CODE_REQUEST_INVALID"
PEER_CERTIFICATE_INVALID = "ERROR_CODE_PEER_CERTIFICATE_VERIFICATION_FAILED"
_SORT_ORDERS = {"SORT_ORDER_ASCENDING": False, "SORT_ORDER_DESCENDING": True}
_MAX_FILTER_VALUES = 1000


def _bad_request(message: str) -> FscError:
    return FscError(falcon.HTTP_400, REQUEST_INVALID, ErrorDomain.MANAGER, message)


def _list_param(req: falcon.asgi.Request, name: str) -> list[str] | None:
    """``style: form, explode: false``: one comma-separated value (repeats accepted too)."""
    values = req.get_param_as_list(name)
    if not values:
        return None
    items = [item for value in values for item in value.split(",") if item]
    if len(items) > _MAX_FILTER_VALUES:
        raise _bad_request(f"{name} takes at most {_MAX_FILTER_VALUES} values")
    return items or None


def _int_param(req: falcon.asgi.Request, name: str, low: int, high: int) -> int | None:
    raw = req.get_param(name)
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise _bad_request(f"{name} must be an integer from {low} to {high}")
    return int(raw)


class Logs:
    """The ``/v1/logs`` resource of the Manager."""

    def __init__(self, log: TransactionLog) -> None:
        self._log = log

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        peer = getattr(req.context, "peer", None)
        if not isinstance(peer, PeerIdentity):  # the middleware's job; never answer without
            raise FscError(
                falcon.HTTP_400,
                PEER_CERTIFICATE_INVALID,
                ErrorDomain.MANAGER,
                "no verified peer certificate: the log answers only to a known peer",
            )
        order = req.get_param("sort_order") or "SORT_ORDER_DESCENDING"
        if order not in _SORT_ORDERS:
            raise _bad_request(f"unknown sort_order {order!r}")
        limit = _int_param(req, "limit", 1, MAX_LIMIT)
        int64_max = 2**63 - 1
        after = _int_param(req, "after", 0, int64_max)
        before = _int_param(req, "before", 0, int64_max)
        transaction_ids = _list_param(req, "transaction_ids")
        if transaction_ids is not None and len(transaction_ids) > MAX_TRANSACTION_IDS:
            raise _bad_request(f"transaction_ids takes at most {MAX_TRANSACTION_IDS} values")
        query: dict[str, Any] = {
            "descending": _SORT_ORDERS[order],
            "transaction_ids": transaction_ids,
        }
        if transaction_ids is None:  # with transaction_ids, the rest is ignored (logging.yaml)
            query.update(
                after=after,
                before=before,
                grant_hashes=_list_param(req, "grant_hash"),
                service_names=_list_param(req, "service_name"),
                cursor=req.get_param("cursor") or None,
                limit=DEFAULT_LIMIT if limit is None else limit,
            )
        try:
            records, next_cursor = await asyncio.to_thread(self._log.query, peer.peer_id, **query)
        except UnknownCursorError as exc:
            raise _bad_request(str(exc)) from None
        except ValueError as exc:  # after/before out of the database's range
            raise _bad_request(str(exc)) from None
        resp.set_header("Cache-Control", "no-store")
        resp.media = {
            "records": [record.to_api() for record in records],
            "pagination": {"next_cursor": next_cursor},
        }


def add_log_routes(app: falcon.asgi.App[Any, Any], log: TransactionLog) -> None:
    """Add ``GET /v1/logs`` to the Manager's app."""
    app.add_route(LOGS_PATH, Logs(log))


__all__ = [
    "ENABLED_EXTENSIONS",
    "LOGGING_EXTENSION",
    "LOGGING_VERSION",
    "LOGS_PATH",
    "Logs",
    "add_log_routes",
]
