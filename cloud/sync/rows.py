"""Passage rows into `gate_passages` in bulk, for the event store (`cloud.sync.service`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from cloud.sync.models import GatePassage
from cloud.tickets.models import Ticket

_PASSAGES = GatePassage.metadata.tables[GatePassage.__tablename__]


def insert_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """One executemany through the driver: each value converted by its column type's bind processor for this
    dialect, as `session.execute(insert(...), rows)` would, without SQLAlchemy's work per row (a third of a
    backlog's cost). Every row has the same keys. Converted column by column: a column holding one value in
    every row (the batch's `received_at`, its gate) is converted once."""
    connection = session.connection()
    dialect = connection.dialect
    names = list(rows[0])
    compiled = insert(_PASSAGES).compile(dialect=dialect, column_keys=names)
    order = list(compiled.positiontup) if compiled.positiontup is not None else names  # qmark (SQLite): its order
    columns = []
    for name in order:
        values = [row[name] for row in rows]
        convert = _PASSAGES.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if convert is not None and all(v is values[0] for v in values):
            values = [convert(values[0])] * len(values)
        elif convert is not None:
            values = [convert(v) for v in values]
        columns.append(values)
    params = list(zip(*columns, strict=True))
    if compiled.positiontup is None:  # named parameters (PostgreSQL)
        connection.exec_driver_sql(str(compiled), [dict(zip(order, v, strict=True)) for v in params])
    else:
        connection.exec_driver_sql(str(compiled), params)


def products_of(session: Session, wanted: dict[int, set[int]]) -> dict[tuple[int, str], int]:
    """The product of each (site id, ticket id) that is one of the site's tickets, by (site id, ticket id text).

    For the passages that count nothing (their tickets are not loaded to be counted): rare, so usually no query.
    """
    found: dict[tuple[int, str], int] = {}
    for site_id, ids in wanted.items():
        rows = session.execute(
            select(Ticket.id, Ticket.product_id).where(Ticket.site_id == site_id, Ticket.id.in_(ids))
        )
        found.update({(site_id, str(ticket_id)): product_id for ticket_id, product_id in rows})
    return found
