"""Reading the cloud's SQLite database while its process runs (the resort, the whole-stack test), without holding it up.

Opened read-only: in WAL mode the writer goes on. A gate's store is read through the edge store's own
`GateStoreReader`, never with SQL from here.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def query(db: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows from a SQLite file another process writes, opened read-only."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
        return c.execute(sql, tuple(params)).fetchall()


def read_rows(db: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """`query` for watching: [] while the file or its tables are not there yet."""
    try:
        return query(db, sql, params) if db.exists() else []
    except sqlite3.OperationalError:
        return []
