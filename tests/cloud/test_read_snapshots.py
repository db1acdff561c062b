"""A long read-only pass (a snapshot, a site's checksum) holds no write lock on SQLite: sales go on meanwhile."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from cloud.db import make_engine, read_only_snapshot


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
