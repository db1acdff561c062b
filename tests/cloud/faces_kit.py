"""What the face tests share: a season-pass holder, consent and enrollment through the API, the site's feed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from fastapi import FastAPI
from sqlalchemy import select

from cloud.deps import Role
from cloud.sync.models import FeedChange
from drivers.face import Box, Enrolled, FakeFaceEncoder, Quality
from harness.api import Api
from models.api import API_PREFIX
from tests.cloud.api import make_product, next_weekday
from tests.cloud.paid_orders import add_holder, sell_paid

API = API_PREFIX
ENCODING = np.linspace(-0.2, 0.2, 128, dtype=np.float32)


def enrolled(encoding: np.ndarray[Any, Any] = ENCODING, face_px: int = 180) -> Enrolled:
    quality = Quality(face_px=face_px, blur=200.0, brightness=120.0, yaw_deg=1.0, pitch_deg=2.0)
    return Enrolled(encoding=encoding, box=Box(top=0, right=face_px, bottom=face_px, left=0), quality=quality)


def fake_encoder(app: FastAPI, *answers: Any) -> FakeFaceEncoder:
    """The app enrolls with a fake answering `answers` in turn (default: the same face every time)."""
    from cloud.faces.encoder import get_face_encoder

    fake = FakeFaceEncoder(enroll=answers or (lambda _data: enrolled()))
    app.dependency_overrides[get_face_encoder] = lambda: fake
    return fake


@dataclass
class PassHolder:
    customer_id: int
    holder_id: int
    order_id: int
    ticket_id: int

    @property
    def me(self) -> str:
        return f"{API}/customers/me/holders/{self.holder_id}/face"

    @property
    def window(self) -> str:
        return f"{API}/customers/{self.customer_id}/holders/{self.holder_id}/face"


def season_product(api: Api, site_id: int, code: str = "season") -> dict[str, Any]:
    day = next_weekday()
    start, end = day - timedelta(days=30), day + timedelta(days=90)
    return make_product(
        api, site_id, code=code, kind="season", season_start=start.isoformat(), season_end=end.isoformat()
    )


def season_holder(app: FastAPI, api: Api, site_id: int, *, holder_id: int | None = None) -> PassHolder:
    """The signed-in customer's holder with a paid season pass at the site (a new holder unless given)."""
    api.token(Role.CUSTOMER)
    assert api.customer_id is not None
    product = season_product(api, site_id, code=f"season-{site_id}")
    holder = holder_id if holder_id is not None else add_holder(app, api.customer_id, "李雪")
    order = sell_paid(app, api, site_id, product["id"], next_weekday(), role=Role.CUSTOMER, holder_id=holder)
    ticket = api.as_(Role.CUSTOMER).get(f"{API}/orders/{order['id']}/tickets").json()[0]
    return PassHolder(api.customer_id, holder, order["id"], ticket["id"])


def consent_and_enroll(api: Api, holder: PassHolder, photo: bytes = b"photo") -> dict[str, Any]:
    me = api.as_(Role.CUSTOMER)
    r = me.post(f"{holder.me}/consent", json={"text_version": "2026-12"})
    assert r.status_code == 201, r.text
    r = me.put(holder.me, files={"photo": ("me.jpg", photo, "image/jpeg")})
    assert r.status_code == 200, r.text
    return dict(r.json())


def feed(app: FastAPI, site_id: int, kind: str | None = None) -> list[tuple[int, dict[str, Any]]]:
    """The site's feed as (seq, change body), optionally of one kind."""
    with app.state.sessionmaker() as s:
        q = select(FeedChange.seq, FeedChange.body).where(FeedChange.site_id == site_id).order_by(FeedChange.seq)
        if kind is not None:
            q = q.where(FeedChange.kind == kind)
        return [(seq, dict(body)) for seq, body in s.execute(q)]
