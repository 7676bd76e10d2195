"""The SQLite writer's heads (appliance.txlog.chain.HeadCache): while the file is as the writer's
last commit left it (``PRAGMA data_version``), the head is neither read nor hashed; after any
other connection's commit it is read again, and the chain stays one gapless order."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from txlogtest import T0, records_at, run, write_all

from appliance.txlog import TransactionLog
from appliance.txlog import chain as chain_module
from appliance.txlog.audit import verify_engine
from appliance.txlog.database import create_engine


def test_an_unchanged_file_is_not_read_for_the_head_and_any_other_commit_is_noticed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "txlog.db"
    url = f"sqlite:///{path}"
    reads: list[str] = []  # "top": the head's seq and prev read; "hashed": the whole record
    top, whole = chain_module.HeadCache.hash_of, chain_module._head_of

    def read_top(self: chain_module.HeadCache, *arguments: Any) -> str | None:
        reads.append("top")
        return top(self, *arguments)

    def read_whole(*arguments: Any) -> Any:
        reads.append("hashed")
        return whole(*arguments)

    monkeypatch.setattr(chain_module.HeadCache, "hash_of", read_top)
    monkeypatch.setattr(chain_module, "_head_of", read_whole)
    with TransactionLog.open(url) as first, TransactionLog.open(url) as second:
        for _ in range(3):
            assert run(write_all(first, records_at(4, start=T0))) == [None] * 4
        assert reads == ["hashed"]  # the first batch only (an empty stream: no top)
        other = sqlite3.connect(path)  # anyone's commit, here not even a record
        with other:
            other.execute("CREATE TABLE elsewhere (x INTEGER)")
        other.close()
        assert run(write_all(first, records_at(2))) == [None] * 2
        assert reads[1:] == ["top"]  # read again, still its own head: not hashed
        assert run(write_all(second, records_at(3))) == [None] * 3
        assert reads[2:] == ["top", "hashed"]  # the other writer reads the head
        assert run(write_all(first, records_at(3))) == [None] * 3
        assert reads[4:] == ["top", "hashed"]  # and so does the first, after it
        assert run(write_all(first, records_at(1))) == [None] * 1
        assert reads[6:] == []
    engine = create_engine(url)
    try:
        report = verify_engine(engine)
    finally:
        engine.dispose()
    assert report.ok
    assert report.streams["DIRECTION_OUTGOING"].records == 21
