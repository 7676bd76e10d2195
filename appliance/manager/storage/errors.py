"""Errors of the Manager's storage, in words an operator or an API handler can act on."""

from __future__ import annotations

from appliance.errors import SluisError


class StorageError(SluisError):
    """The Manager's database refused or could not do what was asked."""


class DuplicateIvError(StorageError):
    """Another contract of the Group already has this ``iv`` (FSC: the iv must be unique)."""

    def __init__(self, group_id: str, iv: str, existing_hash: str | None) -> None:
        where = f" (contract {existing_hash})" if existing_hash else ""
        super().__init__(f"group {group_id!r} already has a contract with iv {iv}{where}")
        self.group_id = group_id
        self.iv = iv
        self.existing_hash = existing_hash


class UnknownContractError(StorageError):
    """A signature, delivery or service names a contract that is not stored."""

    def __init__(self, content_hash: str) -> None:
        super().__init__(f"no contract with content hash {content_hash}")
        self.content_hash = content_hash


class UnknownCursorError(StorageError, ValueError):
    """A pagination cursor that names no stored row (an API answers it with 400)."""

    def __init__(self, cursor: str) -> None:
        super().__init__(f"unknown pagination cursor {cursor!r}")
        self.cursor = cursor
