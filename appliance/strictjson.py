"""JSON objects whose member names are unique, as I-JSON (RFC 7493) and JWS headers demand.

:func:`json.loads` keeps the last of two members with the same name; the hook here refuses
them instead, with the error of the caller's module.
"""

from __future__ import annotations

from collections.abc import Callable

ObjectPairsHook = Callable[[list[tuple[str, object]]], dict[str, object]]


def unique_members(error: Callable[[str], Exception]) -> ObjectPairsHook:
    """An ``object_pairs_hook`` for :func:`json.loads`: ``error(name)`` for a name given twice."""

    def hook(pairs: list[tuple[str, object]]) -> dict[str, object]:
        result: dict[str, object] = {}
        for name, value in pairs:
            if name in result:
                raise error(name)
            result[name] = value
        return result

    return hook
