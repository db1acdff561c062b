"""The back office configures a channel and its SKU mapping through the API; other roles are refused; every
change is audited; secrets never travel through it."""

from __future__ import annotations

from typing import Any

import pytest

from cloud.deps import Role
from models.api import API_PREFIX
from tests.cloud.channels.kit import ChannelCloud

CHANNELS = f"{API_PREFIX}/channels"


def _configure(cloud: ChannelCloud, **body: Any) -> Any:
    payload = {"enabled": True, "base_url": "https://lbx.example.com", "freshness_s": 300, "config": {"shop": "s1"}}
    return cloud.api.as_(Role.ADMIN).put(f"{CHANNELS}/lebingxue", json={**payload, **body})


def test_an_admin_configures_a_channel_and_maps_a_sku(channel_cloud: ChannelCloud, product: dict[str, Any]) -> None:
    admin = channel_cloud.api.as_(Role.ADMIN)

    r = _configure(channel_cloud)
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] is True and r.json()["secrets_present"] is True
    put = admin.put(f"{CHANNELS}/lebingxue/skus/LBX-DAY", json={"product_id": product["id"], "price_fen": 25000})
    assert put.status_code == 200, put.text

    listed = {c["code"]: c for c in admin.get(CHANNELS).json()}
    assert set(listed) == {"douyin", "meituan", "ctrip", "lebingxue"}
    assert listed["douyin"]["configured"] is False
    lbx = listed["lebingxue"]
    assert (lbx["base_url"], lbx["freshness_s"], lbx["config"]) == ("https://lbx.example.com", 300, {"shop": "s1"})
    assert [(s["sku"], s["product_id"], s["price_fen"], s["active"]) for s in lbx["skus"]] == [
        ("LBX-DAY", product["id"], 25000, True)
    ]
    assert "secret" not in str(lbx).replace("secrets_present", "")
    got = admin.get(f"{CHANNELS}/lebingxue/skus/LBX-DAY").json()
    assert got["price_fen"] == 25000

    assert admin.delete(f"{CHANNELS}/lebingxue/skus/LBX-DAY").status_code == 204
    assert admin.get(f"{CHANNELS}/lebingxue/skus/LBX-DAY").status_code == 404

    audit = [e["action"] for e in admin.get(f"{API_PREFIX}/audit").json()]
    assert {"channel.configure", "channel.sku", "channel.sku_delete"} <= set(audit)


def test_a_sku_cannot_be_mapped_before_its_channel_or_to_an_unknown_product(
    channel_cloud: ChannelCloud, product: dict[str, Any]
) -> None:
    admin = channel_cloud.api.as_(Role.ADMIN)
    early = admin.put(f"{CHANNELS}/lebingxue/skus/LBX-DAY", json={"product_id": product["id"]})
    assert early.status_code == 409 and early.json()["error"]["code"] == "channel_not_configured"
    assert early.json()["error"]["message_zh"]

    _configure(channel_cloud)
    unknown = admin.put(f"{CHANNELS}/lebingxue/skus/LBX-DAY", json={"product_id": 999999})
    assert unknown.status_code == 404


def test_a_channel_without_its_secrets_cannot_be_enabled(channel_cloud: ChannelCloud) -> None:
    channel_cloud.settings.__dict__["channel_secrets"] = {}  # the cloud started without STARFISH_CHANNEL_SECRETS_*
    try:
        refused = _configure(channel_cloud)
        saved = _configure(channel_cloud, enabled=False)
    finally:
        del channel_cloud.settings.__dict__["channel_secrets"]

    assert refused.status_code == 409 and refused.json()["error"]["code"] == "channel_secrets_missing"
    assert saved.status_code == 200 and saved.json()["enabled"] is False


ADMIN_ROUTES = [
    ("get", CHANNELS),
    ("put", f"{CHANNELS}/lebingxue"),
    ("put", f"{CHANNELS}/lebingxue/skus/X"),
    ("delete", f"{CHANNELS}/lebingxue/skus/X"),
]


def test_only_an_admin_configures_channels_and_only_admin_and_finance_see_the_calls(
    channel_cloud: ChannelCloud,
) -> None:
    refused = {}
    for role in (Role.CASHIER, Role.FINANCE, Role.GATE_TECH, Role.VERIFIER, Role.CUSTOMER, None):
        client = channel_cloud.api.as_(role)
        for method, path in ADMIN_ROUTES:
            body = {"enabled": False} if path.endswith("lebingxue") else {"product_id": 1}
            r = getattr(client, method)(path, **({"json": body} if method == "put" else {}))
            refused[(role, method, path)] = r.status_code
        refused[(role, "get", "calls")] = client.get(f"{CHANNELS}/calls").status_code

    def expected(role: Role | None, path: str) -> int:
        return 401 if role is None else 200 if role is Role.FINANCE and path == "calls" else 403

    assert refused == {(role, m, p): expected(role, p) for role, m, p in refused}
    assert channel_cloud.api.as_(Role.ADMIN).get(CHANNELS).json()[3]["configured"] is False


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"enabled": True, "base_url": "ftp://x"}, id="not-http"),
        pytest.param({"enabled": True, "freshness_s": 5}, id="freshness-too-short"),
        pytest.param({"enabled": True, "config": {"k": "a\x00b"}}, id="control-character"),
        pytest.param({"enabled": True, "secret": "x"}, id="a-secret-is-not-configuration"),
    ],
)
def test_a_bad_configuration_is_refused(channel_cloud: ChannelCloud, body: dict[str, Any]) -> None:
    r = channel_cloud.api.as_(Role.ADMIN).put(f"{CHANNELS}/lebingxue", json=body)

    assert r.status_code == 422


def test_an_unknown_channel_is_not_found(channel_cloud: ChannelCloud) -> None:
    assert _notify_unknown(channel_cloud).status_code == 404
    r = channel_cloud.api.as_(Role.ADMIN).put(f"{CHANNELS}/taobao", json={"enabled": False})
    assert r.status_code == 404 and r.json()["error"]["code"] == "channel_not_found"


def _notify_unknown(cloud: ChannelCloud) -> Any:
    import httpx

    return httpx.post(f"{cloud.url}{CHANNELS}/taobao/notify/order", content=b"{}", timeout=10)
