"""A rental desk for tests: skis (tagged pairs) and helmets (counted), made through the admin API."""

from __future__ import annotations

from typing import Any

from cloud.deps import Role
from harness.api import Api

R = "/api/v1/rentals"
SKIS = {
    "code": "ski-170",
    "name": "双板",
    "category": "skis",
    "size": "170cm",
    "tracking": "tagged",
    "hour_weekday_fen": 3000,
    "day_weekday_fen": 12000,
    "deposit_fen": 50000,
    "damage_fee_fen": 8000,
    "loss_fee_fen": 200000,
}
HELMETS = {
    "code": "helmet-m",
    "name": "头盔",
    "category": "helmet",
    "size": "M",
    "tracking": "counted",
    "hour_weekday_fen": 1000,
    "day_weekday_fen": 3000,
    "deposit_fen": 10000,
    "damage_fee_fen": 2000,
    "loss_fee_fen": 30000,
}


def make_desk(api: Api, site_id: int, *, tags: list[str], helmets: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(skis, helmets) items of the site: a tagged pair per tag, `helmets` counted helmets."""
    admin = api.as_(Role.ADMIN)
    skis = admin.post(f"{R}/sites/{site_id}/items", json=SKIS)
    assert skis.status_code == 201, skis.text
    helmet = admin.post(f"{R}/sites/{site_id}/items", json=HELMETS)
    assert helmet.status_code == 201, helmet.text
    if tags:
        assert admin.post(f"{R}/items/{skis.json()['id']}/assets", json={"tags": tags}).status_code == 201
    assert admin.put(f"{R}/items/{helmet.json()['id']}/stock", json={"stock": helmets}).status_code == 200
    return skis.json(), helmet.json()


def lines(
    skis: dict[str, Any], helmets: dict[str, Any], *, n_skis: int, n_helmets: int, unit: str, periods: int
) -> list[dict[str, Any]]:
    out = []
    if n_skis:
        out.append({"item_id": skis["id"], "quantity": n_skis, "period_unit": unit, "periods": periods})
    if n_helmets:
        out.append({"item_id": helmets["id"], "quantity": n_helmets, "period_unit": unit, "periods": periods})
    return out
