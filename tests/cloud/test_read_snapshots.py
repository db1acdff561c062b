"""A long read-only pass (a snapshot, a site's checksum) holds no write lock on SQLite: sales go on meanwhile."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.orm import Session

from cloud.db import make_engine, read_only_snapshot
from cloud.sync import snapshot
from harness.api import Api
from models.sync import KeySet, SnapshotHeader
from tests.cloud.api import next_weekday
from tests.cloud.paid_orders import sell_paid


def test_a_read_only_snapshot_on_sqlite_lets_a_writer_commit_and_keeps_its_own_view(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'cloud.db'}")
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE tickets (id INTEGER PRIMARY KEY)")
        c.exec_driver_sql("INSERT INTO tickets VALUES (1), (2)")
    with Session(engine) as reader, Session(engine) as writer:
        read_only_snapshot(reader)
        assert reader.scalar(text("SELECT count(*) FROM tickets")) == 2  # the snapshot starts here
        writer.execute(text("INSERT INTO tickets VALUES (3)"))
        writer.commit()  # behind a BEGIN IMMEDIATE reader: "database is locked" after the 30 s busy timeout
        assert reader.scalar(text("SELECT count(*) FROM tickets")) == 2  # still its own view
        reader.rollback()
        assert reader.scalar(text("SELECT count(*) FROM tickets")) == 3


def test_a_sale_commits_while_a_snapshot_is_being_streamed_on_sqlite(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    day = next_weekday()
    sell_paid(app, api, site["id"], day_product["id"], day, quantity=3)
    # Hold the snapshot's writer in the middle of its pass over the tickets: its read transaction stays open.
    midway, go_on = threading.Event(), threading.Event()
    line = snapshot.WireLines.line

    def held(self: snapshot.WireLines, row: tuple[Any, ...]) -> str:
        midway.set()
        assert go_on.wait(30)
        return line(self, row)

    monkeypatch.setattr(snapshot.WireLines, "line", held)
    with app.state.sessionmaker() as session:
        snap = snapshot.build(session, site["id"], "nanshan", KeySet(keys={}), yield_per=1)
        lines = snap.lines()
        header = SnapshotHeader.model_validate_json(next(lines))
        assert midway.wait(30)
        try:
            sell_paid(app, api, site["id"], day_product["id"], day)  # behind a write lock: "database is locked"
        finally:
            go_on.set()
        body = b"".join(lines).splitlines()
        assert header.tickets == 3 and len(body) == 3  # the snapshot kept its own view
        assert snapshot.site_checksum(session, site["id"]).tickets == 4  # the sale is in the next one
