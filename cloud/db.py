"""SQLAlchemy 2 engine, sessions and the declarative base. SQLite by default, PostgreSQL in production."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from cloud.errors import DomainError

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str) -> Engine:
    """An engine tuned for its backend: SQLite gets WAL and foreign keys, PostgreSQL a pool."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn: Any, _record: Any) -> None:
            # pysqlite's own transaction handling sends no BEGIN before a SAVEPOINT, so a savepoint
            # would commit on its own; take over BEGIN (SQLAlchemy's documented recipe).
            conn.isolation_level = None
            cur = conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            if ":memory:" not in url:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # IMMEDIATE: take the write lock up front. A deferred transaction that reads, then
            # writes after another writer committed fails at once with "database is locked"
            # (busy_timeout cannot help); SQLite has one writer anyway, so queueing costs little.
            # A long read-only pass (`read_only_snapshot`) begins deferred: WAL gives it a snapshot
            # at its first read and the writers go on meanwhile.
            deferred = conn.get_execution_options().get(SQLITE_DEFERRED, False)
            conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

        return engine
    # No pre-ping (a round trip per request); connections are recycled instead, and a dead one
    # fails that one request, which the client retries (orders are idempotent by key).
    return create_engine(url, pool_size=10, max_overflow=10, pool_recycle=1800)


SQLITE_DEFERRED = "starfish_sqlite_deferred"


def read_only_snapshot(session: Session) -> None:
    """Make the session's next transaction one consistent, read-only view that blocks no writer: REPEATABLE
    READ on PostgreSQL, a deferred transaction on SQLite (never one that writes). Call before its first read."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True})
    else:
        session.connection(execution_options={SQLITE_DEFERRED: True})


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def add_unique(session: Session, row: Base, taken: DomainError) -> None:
    """Insert `row` now, in a savepoint; a unique key it collides with raises `taken` (a 409), not a 500.

    Services check for the name or code first, for the plain answer; this covers the request that
    passed the check while a concurrent one inserted the same name (on PostgreSQL it waits for
    that one's commit, then collides). Other integrity errors are raised as they are.
    """
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError as exc:
        if not _unique_violation(exc):
            raise
        raise taken from exc


def _unique_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) == "23505" or getattr(orig, "sqlite_errorname", None) in (
        "SQLITE_CONSTRAINT_UNIQUE",
        "SQLITE_CONSTRAINT_PRIMARYKEY",
    )


def dialect_insert(session: Session) -> Callable[..., postgresql.Insert | sqlite.Insert]:
    """The INSERT of the session's database, the one with ON CONFLICT (PostgreSQL's or SQLite's)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def one_at_a_time(session: Session, name: str) -> None:
    """Until this transaction ends, no other transaction passes `one_at_a_time` with the same `name`.

    A transaction-scoped advisory lock on PostgreSQL, which unlike a table lock holds up nothing else;
    on SQLite nothing is needed: its transactions begin IMMEDIATE, so writers take turns (`make_engine`).
    """
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        session.execute(select(func.pg_advisory_xact_lock(key)))
