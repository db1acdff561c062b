"""Issue 14, rentals on PostgreSQL under concurrency: two desks after the last pair, exactly one gets it.

Each race is forced, not hoped for: the first desk's transaction stops just before its commit until the second
desk's statement is seen waiting for a lock (pg_stat_activity), then commits; the second must then lose.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from cloud.db import utcnow
from cloud.deps import Principal, Role
from cloud.errors import Conflict
from cloud.rentals import desk, orders
from cloud.rentals.models import RentalAsset, RentalItem
from cloud.rentals.schemas import HandOutIn, RentalOrderIn
from harness.api import Api
from tests.cloud.rental_desk import R, lines, make_desk

pytestmark = [pytest.mark.rentals, pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]

DESK_1 = Principal(role=Role.RENTAL_CLERK, subject_id=1, name="desk-1")
DESK_2 = Principal(role=Role.RENTAL_CLERK, subject_id=2, name="desk-2")


def _someone_waits_for_a_lock(app: FastAPI) -> bool:
    with app.state.sessionmaker() as s:
        n = s.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
        return bool(n)


def race(app: FastAPI, first: Callable[[Session], Any], second: Callable[[Session], Any]) -> list[BaseException | None]:
    """Run `first` up to its commit, then `second` until it waits for a lock, then let both finish; their errors."""
    at_commit, blocked = threading.Event(), threading.Event()

    def run_first() -> None:
        with app.state.sessionmaker() as s:

            @event.listens_for(s, "before_commit")
            def _hold(_: Session) -> None:
                at_commit.set()
                deadline = time.monotonic() + 20
                while not _someone_waits_for_a_lock(app) and time.monotonic() < deadline:
                    time.sleep(0.02)
                blocked.set()

            first(s)

    def run_second() -> None:
        assert at_commit.wait(20)
        with app.state.sessionmaker() as s:
            second(s)

    with ThreadPoolExecutor(2) as pool:
        futures: list[Future[None]] = [pool.submit(run_first), pool.submit(run_second)]
        errors = [f.exception(timeout=60) for f in futures]
    assert blocked.is_set()
    return errors


def _codes(errors: list[BaseException | None]) -> list[str | None]:
    return [e.code if isinstance(e, Conflict) else (None if e is None else repr(e)) for e in errors]


def test_two_desks_renting_the_last_pair_and_the_last_helmet_at_once_one_gets_them(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    skis, helmets = make_desk(api, site["id"], tags=["SK-LAST"], helmets=1)
    body = RentalOrderIn.model_validate(
        {"site_id": site["id"], "lines": lines(skis, helmets, n_skis=1, n_helmets=1, unit="hour", periods=2)}
    )
    settings = app.state.settings

    def rent(who: Principal) -> Callable[[Session], Any]:
        return lambda s: orders.create_rental_order(s, settings, who, body, idempotency_key=None, now=utcnow())

    assert _codes(race(app, rent(DESK_1), rent(DESK_2))) == [None, "rental_unavailable"]
    with app.state.sessionmaker() as s:
        assert [i.available for i in s.scalars(select(RentalItem).order_by(RentalItem.id))] == [0, 0]
    found = api.as_(Role.RENTAL_CLERK).get(f"{R}/sites/{site['id']}/items").json()
    assert [i["available"] for i in found] == [0, 0]


def test_two_desks_scanning_the_same_pair_out_at_once_hand_it_to_one_order(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    skis, helmets = make_desk(api, site["id"], tags=["SK-1", "SK-2"], helmets=0)
    clerk = api.as_(Role.RENTAL_CLERK)
    ids = []
    for _ in range(2):
        body = {"site_id": site["id"], "lines": lines(skis, helmets, n_skis=1, n_helmets=0, unit="day", periods=1)}
        order = clerk.post(f"{R}/orders", json=body).json()
        paid = {"method": "cash", "amount_fen": order["total_fen"]}
        assert clerk.post(f"{R}/orders/{order['order_id']}/payments/counter", json=paid).status_code == 201
        ids.append(order["order_id"])
    scan = HandOutIn(tags=["SK-1"])

    def hand(who: Principal, order_id: int) -> Callable[[Session], Any]:
        return lambda s: desk.hand_out(s, who, order_id, scan, now=utcnow())

    assert _codes(race(app, hand(DESK_1, ids[0]), hand(DESK_2, ids[1]))) == [None, "asset_not_available"]
    with app.state.sessionmaker() as s:
        asset = s.scalars(select(RentalAsset).where(RentalAsset.tag == "SK-1")).one()
        assert asset.status == "out"
    got = [clerk.get(f"{R}/orders/{i}").json() for i in ids]
    assert [(o["status"], o["assets_out"]) for o in got] == [("out", ["SK-1"]), ("ready", [])]
