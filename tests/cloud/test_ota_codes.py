"""An OTA order's tickets carry plain voucher codes in our shape, down the site's feed and in its snapshot."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from cloud.deps import Role
from cloud.settings import DEV_VOUCHER_KEY_B64, Settings
from cloud.sync.models import FeedChange
from cloud.tickets.models import Ticket
from cloud.tickets.service import wire_ticket
from harness.api import Api
from harness.keys import VOUCHER_KEY_B64, cloud_settings, production_env, settings_of
from models import Ticket as WireTicket
from models.sync import SnapshotHeader
from models.voucher import load_voucher_key, looks_like_ours, site_voucher_key
from starfish.cli import app as cli
from tests.cloud.api import next_weekday
from tests.cloud.paid_orders import pay, sell_paid

SITE = "nanshan"  # the conftest site's code
NANSHAN_KEY = site_voucher_key(base64.b64decode(VOUCHER_KEY_B64), SITE)


def sell_ota(app: FastAPI, api: Api, site_id: int, product_id: int, *, quantity: int, ref: str) -> dict[str, Any]:
    """An OTA order typed in by an admin, then paid (the platform collected the money)."""
    item = {"product_id": product_id, "visit_date": next_weekday().isoformat(), "quantity": quantity}
    body = {"site_id": site_id, "channel": "ota", "ota_channel": "meituan", "ota_order_ref": ref, "items": [item]}
    r = api.as_(Role.ADMIN).post("/api/v1/orders", json=body)
    assert r.status_code == 201, r.text
    pay(app, r.json()["id"])
    return dict(r.json())


def tickets_of(api: Api, order_id: int) -> list[dict[str, Any]]:
    r = api.as_(Role.ADMIN).get(f"/api/v1/orders/{order_id}/tickets")
    assert r.status_code == 200, r.text
    return list(r.json())


def test_an_ota_orders_tickets_get_our_codes_and_a_counter_orders_none(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    ota = tickets_of(api, sell_ota(app, api, site["id"], day_product["id"], quantity=3, ref="MT-1")["id"])
    counter = tickets_of(api, sell_paid(app, api, site["id"], day_product["id"], next_weekday())["id"])

    codes = [t["code"] for t in ota]
    assert len(set(codes)) == 3
    assert all(code.startswith("MTNA") and looks_like_ours(code, NANSHAN_KEY) for code in codes)
    assert [t["code"] for t in counter] == [None]
    assert all(t["token"] for t in ota), "an OTA ticket keeps its signed QR too"


def test_the_codes_go_down_the_feed_and_into_the_snapshot(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    r = api.as_(Role.ADMIN).post(f"/api/v1/sites/{site['id']}/gates", json={"code": "g1", "name": "G1"})
    assert r.status_code == 201, r.text
    gate = r.json()
    order = sell_ota(app, api, site["id"], day_product["id"], quantity=2, ref="MT-2")
    codes = {str(t["id"]): t["code"] for t in tickets_of(api, order["id"])}

    with app.state.sessionmaker() as session:
        upserts = session.scalars(select(FeedChange.body).where(FeedChange.kind == "ticket")).all()
        fed = {b["ticket"]["ticket_id"]: b["ticket"]["code"] for b in upserts}
        wire = sorted((wire_ticket(t) for t in session.scalars(select(Ticket))), key=lambda w: w.ticket_id)
    assert fed == codes

    snap = api.client.get(f"/api/v1/sync/sites/{SITE}/snapshot", auth=(gate["username"], gate["secret"]))
    assert snap.status_code == 200, snap.text
    head, *lines = snap.content.splitlines()
    count = SnapshotHeader.model_validate_json(head).tickets
    assert lines[:count] == [w.model_dump_json().encode() for w in wire], "the snapshot's lines are the wire's bytes"
    assert {t.ticket_id: t.code for t in map(WireTicket.model_validate_json, lines[:count])} == codes


def test_a_code_names_one_ticket_of_its_site(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    order = sell_ota(app, api, site["id"], day_product["id"], quantity=2, ref="MT-3")
    first, second = tickets_of(api, order["id"])
    with app.state.sessionmaker() as session, pytest.raises(IntegrityError):
        ticket = session.get(Ticket, second["id"])
        assert ticket is not None
        ticket.code = first["code"]
        session.commit()


def test_without_a_voucher_key_ota_tickets_keep_their_signed_qr_only(db_url: str) -> None:
    plain = cloud_settings(db_url, voucher_key_b64="")
    assert plain.voucher_key is None
    assert Settings(environment="development").voucher_key is not None, "development has the published key"


def test_production_refuses_the_published_development_voucher_key(db_url: str) -> None:
    env = {**production_env(db_url), "STARFISH_VOUCHER_KEY_B64": DEV_VOUCHER_KEY_B64}
    with pytest.raises(ValidationError, match="STARFISH_VOUCHER_KEY_FILE holds the published development key"):
        settings_of(env)
    assert settings_of(production_env(db_url)).voucher_key is not None


def test_the_cli_prints_the_voucher_key_a_sites_gates_hold(
    app: FastAPI, settings: Settings, site: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "STARFISH_ENVIRONMENT": "development",
        "STARFISH_DATABASE_URL": settings.database_url,
        "STARFISH_VOUCHER_KEY_B64": VOUCHER_KEY_B64,
    }.items():
        monkeypatch.setenv(name, value)
    printed = CliRunner().invoke(cli, ["cloud", "voucher-key", "--site", SITE])
    assert printed.exit_code == 0, printed.output
    assert load_voucher_key(printed.output) == NANSHAN_KEY
    assert CliRunner().invoke(cli, ["cloud", "voucher-key", "--site", "nowhere"]).exit_code == 2
