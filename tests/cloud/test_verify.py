"""Handheld verification (核销): a staff member looks a code up and verifies it, one entry under the gates'
rules, idempotent by the handheld's event id, undoable for a while, listed and exported; gate passages and
handheld verifications count on the same ticket, so a ticket is never used twice the two ways."""

from __future__ import annotations

import csv
import io
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from cloud.audit.models import AuditEntry
from cloud.db import utcnow
from cloud.deps import Principal, Role
from cloud.staff.models import Staff
from cloud.sync import service as sync_service
from cloud.sync.inbound import EventIn
from cloud.sync.models import GatePassage
from cloud.tickets.models import Ticket
from cloud.verify import rules
from cloud.verify import service as verify_service
from cloud.verify.models import Verification
from cloud.verify.schemas import VerifyIn
from edge.reasons import CATALOG, Reason
from harness.api import Api
from models import Direction, Outcome, PassageEvent
from tests.cloud.api import make_product, next_weekday
from tests.cloud.paid_orders import pay, sell, sell_paid

SITE = "nanshan"  # the conftest site's code
URL = "/api/v1/verify"


def today() -> Any:
    return datetime.now(ZoneInfo("Asia/Shanghai")).date()


@pytest.fixture
def single(api: Api, site: dict[str, Any]) -> dict[str, Any]:
    """A day ticket good for one entry."""
    return make_product(api, site["id"], code="single", entries=1)


def ticket_of(app: FastAPI, api: Api, site_id: int, product_id: int, day: Any = None, **kw: Any) -> dict[str, Any]:
    """One paid ticket (valid today unless `day` says otherwise), as the API shows it."""
    order = sell_paid(app, api, site_id, product_id, day or today(), **kw)
    [ticket] = api.as_(Role.ADMIN).get(f"/api/v1/orders/{order['id']}/tickets").json()
    return dict(ticket)


def verify(api: Api, site_id: int, code: str, *, role: Role = Role.VERIFIER, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "event_id": str(uuid.uuid4()), "at": utcnow().isoformat(), "device": "hh-01"}
    body.update(site_id=site_id, **kw)
    r = api.as_(role).post(URL, json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def db_ticket(app: FastAPI, ticket_id: int) -> Ticket:
    with app.state.sessionmaker() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        return ticket


def set_ticket(app: FastAPI, ticket_id: int, **values: Any) -> None:
    with app.state.sessionmaker() as session:
        session.execute(update(Ticket).where(Ticket.id == ticket_id).values(**values))
        session.commit()


def gate_passage(app: FastAPI, api: Api, site_id: int, ticket_id: int, *, minutes_ago: float = 0) -> str | None:
    """A gate of the site admitted the ticket and its passage reached the cloud; the conflict it was flagged with."""
    if not api.as_(Role.ADMIN).get(f"/api/v1/sites/{site_id}/gates").json():
        r = api.as_(Role.ADMIN).post(f"/api/v1/sites/{site_id}/gates", json={"code": "g1", "name": "G1"})
        assert r.status_code == 201, r.text
    event = PassageEvent(
        gate_id="g1",
        site_id=SITE,
        at=utcnow() - timedelta(minutes=minutes_ago),
        direction=Direction.IN,
        outcome=Outcome.ADMIT,
        code="ok",
        ticket_id=str(ticket_id),
        passed=True,
        counted=True,
        credential="signed",
    )
    with app.state.sessionmaker() as session:
        sync_service.store(session, [EventIn(SITE, "g1", event)])
        return session.scalar(select(GatePassage.conflict).where(GatePassage.event_id == event.event_id))


def test_a_single_entry_ticket_is_verified_once_and_refused_used_up_the_second_time(
    app: FastAPI, api: Api, site: dict[str, Any], single: dict[str, Any]
) -> None:
    ticket = ticket_of(app, api, site["id"], single["id"])

    first = verify(api, site["id"], ticket["token"])
    second = verify(api, site["id"], ticket["token"], role=Role.CASHIER)

    assert (first["accepted"], first["reason"], first["entries_left"], first["ticket_id"]) == (
        True,
        "ok",
        0,
        ticket["id"],
    )
    assert (first["staff_name"], first["device"], first["channel"]) == ("verifier-user", "hh-01", "counter")
    assert (second["accepted"], second["reason"]) == (False, "used_up")
    assert (second["message"], second["message_zh"]) == ("No entries left on this ticket", "该票次数已用完")
    stored = db_ticket(app, ticket["id"])
    assert (stored.entries_used, stored.status, stored.first_entry_at) == (
        1,
        "used",
        datetime.fromisoformat(first["at"]),
    )


def test_a_punch_ticket_counts_down_by_its_ticket_number_typed_in(app: FastAPI, api: Api, site: dict[str, Any]) -> None:
    punch = make_product(api, site["id"], code="punch3", kind="punch", entries=3)
    ticket = ticket_of(app, api, site["id"], punch["id"])

    lefts = [verify(api, site["id"], str(ticket["id"]), role=Role.GATE_TECH)["entries_left"] for _ in range(3)]

    assert lefts == [2, 1, 0]
    assert verify(api, site["id"], str(ticket["id"]))["reason"] == "used_up"


def _revoked(app: FastAPI, t: dict[str, Any]) -> str:
    set_ticket(app, t["id"], status="refunded")
    return str(t["token"])


def _expired(app: FastAPI, t: dict[str, Any]) -> str:
    set_ticket(app, t["id"], valid_until=utcnow() - timedelta(hours=1))  # its day is over
    return str(t["token"])


def _window_over(app: FastAPI, t: dict[str, Any]) -> str:
    set_ticket(app, t["id"], window_minutes=60, first_entry_at=utcnow() - timedelta(minutes=61), entries=None)
    return str(t["id"])


def _plain_code_of_another_site(app: FastAPI, t: dict[str, Any]) -> str:
    set_ticket(app, t["id"], code="MTZZ0000000ABCDEF")  # the ticket stays at nanshan; the handheld is elsewhere
    return "MTZZ0000000ABCDEF"


def _forged(app: FastAPI, t: dict[str, Any]) -> str:
    token = str(t["token"])
    return token[:-8] + ("A" if token[-8] != "A" else "B") + token[-7:]


ELSEWHERE = "该票不是本雪场的门票，请到售票处"
UNKNOWN = "未找到该票，请到售票处"
REFUSALS = [
    pytest.param(_revoked, "nanshan", "revoked", "该票已退款或作废", id="refunded"),
    pytest.param(_expired, "nanshan", "expired", "该票已过期", id="expired"),
    pytest.param(_window_over, "nanshan", "expired", "该票已过期", id="time-window-over"),
    pytest.param(lambda app, t: str(t["token"]), "other", "wrong_site", ELSEWHERE, id="signed-other-site"),
    pytest.param(_plain_code_of_another_site, "other", "wrong_site", ELSEWHERE, id="code-other-site"),
    pytest.param(lambda app, t: "NOSUCHCODE123", "nanshan", "unknown_ticket", UNKNOWN, id="unknown-code"),
    pytest.param(lambda app, t: "999999", "nanshan", "unknown_ticket", UNKNOWN, id="unknown-number"),
    pytest.param(_forged, "nanshan", "bad_signature", "票据校验失败，疑似伪造", id="forged-qr"),
]  # fmt: skip


@pytest.mark.parametrize(("present", "at_site", "code", "zh"), REFUSALS)
def test_a_handheld_refuses_what_a_gate_would_and_counts_nothing(
    app: FastAPI,
    api: Api,
    site: dict[str, Any],
    single: dict[str, Any],
    present: Callable[[FastAPI, dict[str, Any]], str],
    at_site: str,
    code: str,
    zh: str,
) -> None:
    ticket = ticket_of(app, api, site["id"], single["id"])
    other = api.as_(Role.ADMIN).post("/api/v1/sites", json={"code": "other", "name": "别的雪场"}).json()
    site_id = site["id"] if at_site == "nanshan" else other["id"]

    answer = verify(api, site_id, present(app, ticket))

    assert (answer["accepted"], answer["reason"], answer["message_zh"]) == (False, code, zh)
    assert db_ticket(app, ticket["id"]).entries_used == 0


def test_a_ticket_for_a_later_day_is_not_yet_valid(
    app: FastAPI, api: Api, site: dict[str, Any], single: dict[str, Any]
) -> None:
    ticket = ticket_of(app, api, site["id"], single["id"], next_weekday())

    answer = verify(api, site["id"], ticket["token"])

    assert (answer["accepted"], answer["reason"], answer["message"]) == (
        False,
        "not_yet_valid",
        "This ticket is not valid yet",
    )


def test_an_offline_handheld_replaying_its_queue_gets_the_same_answers_and_counts_once(
    app: FastAPI, api: Api, site: dict[str, Any], single: dict[str, Any]
) -> None:
    ticket = ticket_of(app, api, site["id"], single["id"])
    set_ticket(app, ticket["id"], issued_at=utcnow() - timedelta(hours=1))  # sold before the handheld went offline
    scanned = utcnow() - timedelta(minutes=20)
    queue = [
        {"code": ticket["token"], "event_id": str(uuid.uuid4()), "at": scanned.isoformat(), "device": "hh-02"},
        {"code": ticket["token"], "event_id": str(uuid.uuid4()), "at": (scanned + timedelta(minutes=1)).isoformat(),
         "device": "hh-02"},
    ]  # fmt: skip
    client = api.as_(Role.VERIFIER)

    first = [client.post(URL, json=e | {"site_id": site["id"]}).json() for e in queue]
    again = [client.post(URL, json=e | {"site_id": site["id"]}).json() for e in queue]

    assert [a["reason"] for a in first] == ["ok", "used_up"]
    assert again == first
    assert db_ticket(app, ticket["id"]).entries_used == 1
    assert db_ticket(app, ticket["id"]).first_entry_at == scanned
    reused = client.post(URL, json=queue[0] | {"site_id": site["id"], "code": str(ticket["id"])})
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "event_id_reused"


@pytest.mark.parametrize(
    ("hours", "code"),
    [pytest.param(2, "implausible_time", id="future"), pytest.param(-1, "before_sale", id="before-the-sale")],
)
def test_a_scan_time_that_cannot_be_true_is_refused_unstored(
    app: FastAPI, api: Api, site: dict[str, Any], single: dict[str, Any], hours: int, code: str
) -> None:
    ticket = ticket_of(app, api, site["id"], single["id"])
    body = {"code": ticket["token"], "event_id": str(uuid.uuid4()), "device": "hh-01", "site_id": site["id"]}

    r = api.as_(Role.VERIFIER).post(URL, json=body | {"at": (utcnow() + timedelta(hours=hours)).isoformat()})

    assert r.status_code == 422 and r.json()["error"]["code"] == code
    with app.state.sessionmaker() as session:
        assert session.scalar(select(Verification.id)) is None


def test_an_undo_gives_the_entry_back_once_audited_and_the_ticket_can_be_verified_again(
    app: FastAPI, api: Api, site: dict[str, Any], single: dict[str, Any]
) -> None:
    ticket = ticket_of(app, api, site["id"], single["id"])
    done = verify(api, site["id"], ticket["token"])
    client = api.as_(Role.VERIFIER)

    undone = client.post(f"{URL}/{done['id']}/undo", json={"reason": "scanned the wrong guest"})
    again = client.post(f"{URL}/{done['id']}/undo", json={"reason": "scanned the wrong guest"})

    assert undone.status_code == 200, undone.text
    assert again.json() == undone.json()
    body = undone.json()
    assert (body["undo_reason"], body["undone_by"], body["entries_left"]) == (
        "scanned the wrong guest",
        "verifier:verifier-user",
        1,
    )
    stored = db_ticket(app, ticket["id"])
    assert (stored.entries_used, stored.status, stored.first_entry_at) == (0, "valid", None)
    with app.state.sessionmaker() as session:
        audits = session.scalars(select(AuditEntry).where(AuditEntry.action == "verify.undo")).all()
    assert [(a.entity_id, a.detail["reason"]) for a in audits] == [(str(done["id"]), "scanned the wrong guest")]
    assert verify(api, site["id"], ticket["token"])["accepted"] is True


def test_an_undo_after_the_window_or_of_a_refusal_is_refused(
    app: FastAPI, api: Api, site: dict[str, Any], single: dict[str, Any]
) -> None:
    ticket = ticket_of(app, api, site["id"], single["id"])
    done = verify(api, site["id"], ticket["token"])
    refused = verify(api, site["id"], ticket["token"])
    minutes = app.state.settings.verify_undo_minutes
    with app.state.sessionmaker() as session:
        session.execute(
            update(Verification)
            .where(Verification.id == done["id"])
            .values(received_at=utcnow() - timedelta(minutes=minutes, seconds=5))
        )
        session.commit()
    client = api.as_(Role.VERIFIER)

    late = client.post(f"{URL}/{done['id']}/undo", json={"reason": "too late"})
    nothing = client.post(f"{URL}/{refused['id']}/undo", json={"reason": "nothing to give back"})

    assert (minutes, late.status_code, late.json()["error"]["code"]) == (10, 409, "undo_window_passed")
    assert (nothing.status_code, nothing.json()["error"]["code"]) == (409, "not_accepted")
    assert db_ticket(app, ticket["id"]).entries_used == 1


def test_a_ticket_a_gate_admitted_is_refused_at_the_handheld_once_the_passage_reached_the_cloud(
    app: FastAPI, api: Api, site: dict[str, Any], single: dict[str, Any]
) -> None:
    ticket = ticket_of(app, api, site["id"], single["id"])
    assert gate_passage(app, api, site["id"], ticket["id"], minutes_ago=3) is None

    answer = verify(api, site["id"], ticket["token"])

    assert (answer["accepted"], answer["reason"]) == (False, "used_up")


def test_a_gate_passage_of_a_ticket_verified_at_a_handheld_is_flagged_over_use(
    app: FastAPI, api: Api, site: dict[str, Any], single: dict[str, Any]
) -> None:
    ticket = ticket_of(app, api, site["id"], single["id"])
    assert verify(api, site["id"], ticket["token"])["accepted"] is True

    assert gate_passage(app, api, site["id"], ticket["id"]) == "over_use"


def test_an_undo_keeps_the_first_entry_a_gate_counted(
    app: FastAPI, api: Api, site: dict[str, Any], day_product: dict[str, Any]
) -> None:
    ticket = ticket_of(app, api, site["id"], day_product["id"])  # unlimited entries on its day
    set_ticket(app, ticket["id"], issued_at=utcnow() - timedelta(hours=1))
    done = verify(api, site["id"], ticket["token"], at=(utcnow() - timedelta(minutes=30)).isoformat())
    gate_passage(app, api, site["id"], ticket["id"], minutes_ago=10)

    r = api.as_(Role.CASHIER).post(f"{URL}/{done['id']}/undo", json={"reason": "double scan"})

    assert r.status_code == 200, r.text
    stored = db_ticket(app, ticket["id"])
    assert stored.entries_used == 1
    assert stored.first_entry_at is not None and utcnow() - stored.first_entry_at < timedelta(minutes=11)


def test_two_handhelds_verifying_one_single_entry_ticket_at_once_count_it_exactly_once(
    app: FastAPI, api: Api, site: dict[str, Any], single: dict[str, Any]
) -> None:
    ticket = ticket_of(app, api, site["id"], single["id"])
    with app.state.sessionmaker() as session:
        staff_id = session.scalar(select(Staff.id).where(Staff.username == "admin-user"))
    actor = Principal(Role.VERIFIER, int(staff_id or 0), "admin-user")
    start = threading.Barrier(4)
    answers: list[str] = []

    def handheld(n: int) -> None:
        body = VerifyIn(code=ticket["token"], event_id=uuid.uuid4(), at=utcnow(), device=f"hh-{n}", site_id=site["id"])
        with app.state.sessionmaker() as session:
            start.wait()
            answers.append(verify_service.verify(session, app.state.settings, actor, body, now=utcnow()).reason)

    threads = [threading.Thread(target=handheld, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(answers) == ["ok", "used_up", "used_up", "used_up"]
    assert db_ticket(app, ticket["id"]).entries_used == 1


def test_lookup_finds_a_ticket_by_qr_code_number_and_phone(
    app: FastAPI, api: Api, site: dict[str, Any], single: dict[str, Any]
) -> None:
    api.as_(Role.CUSTOMER)  # the customer with phone 13800000000
    order = sell(api, site["id"], single["id"], today(), role=Role.CUSTOMER)
    pay(app, order["id"])
    [ticket] = api.as_(Role.ADMIN).get(f"/api/v1/orders/{order['id']}/tickets").json()
    set_ticket(app, ticket["id"], code="MTNA0000000ABCDEF")
    client = api.as_(Role.VERIFIER)

    def look(q: str) -> dict[str, Any]:
        r = client.get(f"{URL}/lookup", params={"q": q, "site_id": site["id"]})
        assert r.status_code == 200, r.text
        return dict(r.json())

    found = {q: look(q) for q in (ticket["token"], "MTNA0000000ABCDEF", str(ticket["id"]), "13800000000")}

    assert [f["matched_as"] for f in found.values()] == ["signed", "code", "ticket_no", "phone"]
    assert all([t["ticket_id"] for t in f["tickets"]] == [ticket["id"]] for f in found.values())
    view = found["13800000000"]["tickets"][0]
    assert (view["valid_now"], view["reason"], view["entries_left"], view["channel"]) == (True, "ok", 1, "online")
    verify(api, site["id"], ticket["token"])
    view = look(str(ticket["id"]))["tickets"][0]
    assert (view["valid_now"], view["reason"], view["message_zh"]) == (False, "used_up", "该票次数已用完")
    assert look("13999999999")["tickets"] == []
    forged = client.get(f"{URL}/lookup", params={"q": _forged(app, ticket)})
    assert (forged.status_code, forged.json()["error"]["code"]) == (422, "bad_signature")


def test_the_list_filters_by_staff_handheld_channel_and_day_and_exports_csv(
    app: FastAPI, api: Api, site: dict[str, Any], single: dict[str, Any]
) -> None:
    first = ticket_of(app, api, site["id"], single["id"])
    second = ticket_of(app, api, site["id"], single["id"])
    verify(api, site["id"], first["token"], device="hh-01")
    verify(api, site["id"], second["token"], device="hh-02", role=Role.CASHIER)
    verify(api, site["id"], second["token"], device="hh-02", role=Role.CASHIER)  # refused: used up
    verify(api, site["id"], "=HYPERLINK(1)", device="hh-02")  # unreadable, and no formula in a spreadsheet
    client = api.as_(Role.FINANCE)
    day = today().isoformat()

    def listed(**params: Any) -> list[dict[str, Any]]:
        r = client.get(f"{URL}/list", params={"site_id": site["id"], "day": day} | params)
        assert r.status_code == 200, r.text
        return list(r.json())

    assert [v["reason"] for v in listed()] == ["ok", "ok", "used_up", "unreadable"]
    assert [v["ticket_id"] for v in listed(staff="cashier-user")] == [second["id"], second["id"]]
    assert [v["device"] for v in listed(gate="hh-01")] == ["hh-01"]
    assert len(listed(channel="counter", accepted=True)) == 2
    assert listed(channel="meituan") == []
    assert listed(day=(today() - timedelta(days=1)).isoformat()) == []

    r = client.get(f"{URL}/list", params={"site_id": site["id"], "day": day, "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text.removeprefix("\ufeff"))))
    assert [(row["device"], row["staff_name"], row["accepted"], row["reason"]) for row in rows] == [
        ("hh-01", "verifier-user", "True", "ok"),
        ("hh-02", "cashier-user", "True", "ok"),
        ("hh-02", "cashier-user", "False", "used_up"),
        ("hh-02", "verifier-user", "False", "unreadable"),
    ]
    assert "HYPERLINK" not in r.text, "the presented code is not exported"


def test_the_list_shows_gate_admissions_beside_handheld_verifications_and_a_conflict_as_its_reason(
    app: FastAPI, api: Api, site: dict[str, Any], single: dict[str, Any]
) -> None:
    at_gate = ticket_of(app, api, site["id"], single["id"])
    twice = ticket_of(app, api, site["id"], single["id"])
    assert gate_passage(app, api, site["id"], at_gate["id"], minutes_ago=2) is None
    verify(api, site["id"], twice["token"], device="hh-01")
    assert gate_passage(app, api, site["id"], twice["id"]) == "over_use"  # the gate admitted it offline after

    def listed(**params: Any) -> list[tuple[str, str, int, str]]:
        query = {"site_id": site["id"], "day": today().isoformat()} | params
        r = api.as_(Role.FINANCE).get(f"{URL}/list", params=query)
        assert r.status_code == 200, r.text
        return [(v["source"], v["device"], v["ticket_id"], v["reason"]) for v in r.json()]

    assert listed() == [
        ("gate", "g1", at_gate["id"], "ok"),
        ("handheld", "hh-01", twice["id"], "ok"),
        ("gate", "g1", twice["id"], "over_use"),
    ]
    assert listed(gate="g1") == listed(source="gate") == [listed()[0], listed()[2]]
    assert listed(staff="verifier-user") == listed(source="handheld") == [listed()[1]]
    assert listed(channel="online", source="gate") == []  # these were sold at the counter
    assert len(listed(channel="counter")) == 3


def test_the_handhelds_reasons_read_as_the_gates() -> None:
    for code, (en, zh) in rules.TEXTS.items():
        assert CATALOG[Reason(code)] == {"en": en, "zh": zh}, code
