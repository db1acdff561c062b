"""What an authentic message cannot do, and what a broken one cannot cause: a platform's (or a captured
signature's) message cannot revoke a whole order by naming nothing, order without bound, or make the cloud
answer 500; verify calls, which carry credentials, go only where the settings allow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import func, select

from cloud.channels.registry import base_url_problem
from cloud.db import utcnow
from cloud.tickets.models import Ticket
from harness.keys import production_env, settings_of
from tests.cloud.channels.kit import ChannelCloud
from tests.cloud.channels.lebingxue_platform import Lebingxue, lebingxue

SKU = "LBX-DAY"


@pytest.fixture
def platform(channel_cloud: ChannelCloud, product: dict[str, Any]) -> Iterator[Lebingxue]:
    with lebingxue() as lbx:
        channel_cloud.configure("lebingxue", base_url=lbx.base_url, skus={SKU: (product["id"], None)})
        yield lbx


def _order(cloud: ChannelCloud, platform: Lebingxue, ref: str, quantity: int, lines: int = 1) -> dict[str, Any]:
    day = utcnow().astimezone(ZoneInfo(cloud.site["timezone"])).date() + timedelta(days=2)
    items = [
        {"sku": SKU, "quantity": quantity, "visit_date": day.isoformat(), "item_id": f"L{i}"} for i in range(lines)
    ]
    return dict(platform.notify(cloud.url, "order", {"order_id": ref, "items": items}).json())


def _valid(cloud: ChannelCloud) -> int:
    with cloud.sessions() as s:
        return s.scalar(select(func.count()).select_from(Ticket).where(Ticket.status == "valid")) or 0


def test_a_refund_the_platform_made_that_names_nothing_revokes_nothing(
    channel_cloud: ChannelCloud, platform: Lebingxue
) -> None:
    assert _order(channel_cloud, platform, "LBX-H1", 3)["code"] == 0
    answer = platform.notify(
        channel_cloud.url, "refund", {"order_id": "LBX-H1", "refund_id": "RF-H1", "decided": True}
    ).json()
    assert answer["code"] != 0 and answer["data"]["reason"] == "wrong_quantity"
    assert _valid(channel_cloud) == 3


@pytest.mark.parametrize(("quantity", "lines"), [(101, 1), (1, 21)])
def test_an_order_without_bound_is_refused(
    channel_cloud: ChannelCloud, platform: Lebingxue, quantity: int, lines: int
) -> None:
    answer = _order(channel_cloud, platform, f"LBX-BIG-{quantity}-{lines}", quantity, lines)
    assert answer["code"] == 1005  # invalid
    assert _valid(channel_cloud) == 0


@pytest.mark.parametrize("code", ["lebingxue", "douyin", "meituan", "ctrip"])
def test_a_signature_header_of_non_ascii_bytes_is_refused_not_a_server_error(
    channel_cloud: ChannelCloud, platform: Lebingxue, code: str
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"x-lbx-timestamp", str(int(utcnow().timestamp())).encode()),
        (b"x-lbx-nonce", b"n1"),
        (b"x-lbx-signature", "é".encode()),
        (b"x-life-sign", "é".encode()),
        (b"authorization", "MWS é:é".encode()),
        (b"date", b"Thu, 03 Dec 2026 10:00:00 GMT"),
        (b"partnerid", b"1"),
    ]
    header = {"accountId": "é", "serviceName": "é", "requestTime": "é", "version": "1.0", "sign": "é"}
    body: dict[str, Any] = {"header": header, "order_id": "x", "partnerId": 1, "body": "x"}
    if code != "lebingxue":  # configured, so the signature is really compared
        config = {"account_id": "a", "client_id": "é", "partner_id": "1"}
        channel_cloud.configure(code, base_url="http://127.0.0.1:9", skus={}, config=config)
    r = httpx.post(channel_cloud.notify_url(code, "order"), content=json.dumps(body).encode(), headers=headers)
    assert r.status_code < 500, r.text


def test_verify_calls_go_only_where_the_settings_allow() -> None:
    pinned = {"lebingxue": {"secret": "s", "base_url": "https://lbx.example/api"}, "douyin": {"client_secret": "x"}}
    production = settings_of(
        {**production_env("sqlite:///unused.db"), "STARFISH_CHANNEL_SECRETS_JSON": json.dumps(pinned)}
    )
    assert base_url_problem(production, "douyin", "https://open.douyin.com") is None
    assert base_url_problem(production, "douyin", "https://attacker.example") is not None
    assert base_url_problem(production, "douyin", "http://open.douyin.com") is not None
    assert base_url_problem(production, "lebingxue", "https://lbx.example/api/") is None
    assert base_url_problem(production, "lebingxue", "https://lbx.example/other") is not None
    assert base_url_problem(production, "ctrip", "https://127.0.0.1:8443") is not None
