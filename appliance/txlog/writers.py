"""What both gateways' ``transaction_log`` setting may name, besides the durable log.

- ``"package.module:factory"``: ``factory(config: SluisConfig)`` makes the writer, once per
  worker, which must satisfy the gateway's writer protocol;
- ``"jsonl:/path/file.jsonl"``: one JSON line per record, FOR TESTS ONLY (no fsync, no tamper
  evidence, never rotated).

The gateways differ in the record they hand over (the inway a dict, the outway a
:class:`~appliance.txlog.record.LogRecord` with purpose fields), so each passes its own JSON
lines class and protocol; the parsing of the setting lives here once.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.config import SluisConfig
from appliance.errors import ConfigurationError

log = logging.getLogger("sluis.txlog")


class JsonLinesFile:
    """Appends one JSON line per record (O_APPEND: several workers may share the file).

    Tests only: not durable (no fsync), not tamper-evident, never rotated.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    async def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if os.write(fd, line) != len(line):
                raise OSError(f"short write to {self.path}")
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line]


def writer_from_spec(
    spec: str,
    config: SluisConfig,
    *,
    section: str,
    json_lines: Callable[[Path], Any],
    protocol: type,
) -> Any:
    """A gateway's ``transaction_log`` setting (not empty): ``jsonl:/path`` (tests only) or
    ``package.module:factory``, whose writer must satisfy ``protocol``."""
    if spec.startswith("jsonl:"):
        path = Path(spec.removeprefix("jsonl:"))
        if not path.is_absolute():
            raise ConfigurationError(f"[{section}] transaction_log jsonl: needs an absolute path")
        log.warning("transaction log: JSON lines in %s (for tests only; not durable)", path)
        return json_lines(path)
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(
            f"[{section}] transaction_log {spec!r} must be 'package.module:factory' or "
            "'jsonl:/path'"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"[{section}] transaction_log {spec!r}: {exc}") from None
    writer = factory(config)
    if not isinstance(writer, protocol):
        raise ConfigurationError(f"[{section}] transaction_log {spec!r} made no LogWriter")
    return writer
