"""Every endpoint declares who may call it, and the declaration is enforced: endpoint × role."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from cloud.app import create_app
from cloud.deps import Role, public, require
from cloud.sync.routes import authenticated_gate
from harness.api import Api
from harness.keys import cloud_settings
from models.api import API_PREFIX
from tests.cloud.api import build_schema

# The access policy, reviewed by hand: a change to who may call what shows up here in review.
EXPECTED: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/auth/token"): "public",
    ("POST", "/api/v1/staff"): "admin",
    ("GET", "/api/v1/staff"): "admin",
    ("PATCH", "/api/v1/staff/{staff_id}"): "admin",
    ("POST", "/api/v1/sites"): "admin",
    ("GET", "/api/v1/sites"): "admin cashier finance gate_tech",
    ("POST", "/api/v1/sites/{site_id}/gates"): "admin",
    ("GET", "/api/v1/sites/{site_id}/gates"): "admin gate_tech",
    ("POST", "/api/v1/gates/{gate_id}/rotate-secret"): "admin",
    ("POST", "/api/v1/sites/{site_id}/products"): "admin",
    ("GET", "/api/v1/sites/{site_id}/products"): "public",
    ("POST", "/api/v1/products/{product_id}/deactivate"): "admin",
    ("POST", "/api/v1/sites/{site_id}/holidays"): "admin",
    ("GET", "/api/v1/products/{product_id}/price"): "public",
    ("PUT", "/api/v1/products/{product_id}/stock"): "admin",
    ("POST", "/api/v1/customers/login/wechat"): "public",
    ("GET", "/api/v1/customers/me"): "customer",
    ("GET", "/api/v1/customers"): "admin cashier",
    ("POST", "/api/v1/customers"): "admin cashier",
    ("POST", "/api/v1/customers/me/holders"): "customer",
    ("GET", "/api/v1/customers/me/holders"): "customer",
    # Face admission: the customer for their own holders, the window for a customer's, the back office.
    ("POST", "/api/v1/customers/me/holders/{holder_id}/face/consent"): "customer",
    ("POST", "/api/v1/customers/me/holders/{holder_id}/face/consent/withdraw"): "customer",
    ("PUT", "/api/v1/customers/me/holders/{holder_id}/face"): "customer",
    ("GET", "/api/v1/customers/me/holders/{holder_id}/face"): "customer",
    ("DELETE", "/api/v1/customers/me/holders/{holder_id}/face"): "customer",
    ("POST", "/api/v1/customers/{customer_id}/holders/{holder_id}/face/consent"): "admin cashier",
    ("POST", "/api/v1/customers/{customer_id}/holders/{holder_id}/face/consent/withdraw"): "admin cashier",
    ("PUT", "/api/v1/customers/{customer_id}/holders/{holder_id}/face"): "admin cashier",
    ("GET", "/api/v1/customers/{customer_id}/holders/{holder_id}/face"): "admin cashier",
    ("DELETE", "/api/v1/customers/{customer_id}/holders/{holder_id}/face"): "admin cashier",
    ("GET", "/api/v1/customers/{customer_id}/holders/{holder_id}/face/photo"): "admin cashier",
    ("GET", "/api/v1/sites/{site_id}/face-deletions"): "admin gate_tech",
    ("GET", "/api/v1/sites/{site_id}/face-settings"): "admin",
    ("PUT", "/api/v1/sites/{site_id}/face-settings"): "admin",
    ("POST", "/api/v1/orders"): "admin cashier customer",
    ("GET", "/api/v1/orders"): "admin cashier customer finance",
    ("GET", "/api/v1/orders/{order_id}"): "admin cashier customer finance",
    ("POST", "/api/v1/orders/{order_id}/cancel"): "admin cashier customer",
    ("POST", "/api/v1/orders/expire"): "admin",
    ("POST", "/api/v1/orders/{order_id}/payments/counter"): "admin cashier",
    ("POST", "/api/v1/orders/{order_id}/payments/wechat"): "customer",
    ("POST", "/api/v1/payments/wechat/notify"): "public",
    ("GET", "/api/v1/orders/{order_id}/payments"): "admin cashier finance",
    ("GET", "/api/v1/orders/{order_id}/tickets"): "admin cashier customer finance",
    ("GET", "/api/v1/tickets/{ticket_id}"): "admin cashier customer finance",
    ("GET", "/api/v1/tickets/{ticket_id}/qr.png"): "admin cashier customer finance",
    ("GET", "/api/v1/tickets/{ticket_id}/qr.svg"): "admin cashier customer finance",
    ("GET", "/api/v1/tickets/{ticket_id}/paper.pdf"): "admin cashier customer finance",
    ("POST", "/api/v1/orders/{order_id}/refunds"): "admin cashier customer",
    ("GET", "/api/v1/orders/{order_id}/refunds"): "admin cashier customer finance",
    ("GET", "/api/v1/refunds/failing"): "admin finance",
    ("POST", "/api/v1/refunds/{refund_id}/retry"): "admin finance",
    ("POST", "/api/v1/refunds/wechat/notify"): "public",
    ("GET", "/api/v1/sites/{site_id}/revocations"): "admin gate_tech",
    ("GET", "/api/v1/points"): "customer",
    ("POST", "/api/v1/points/signin"): "customer",
    ("POST", "/api/v1/points/spend"): "customer",
    ("POST", "/api/v1/customers/{customer_id}/points/adjust"): "admin",
    ("GET", "/api/v1/audit"): "admin finance",
    ("GET", "/api/v1/sites/{site_id}/gates/status"): "admin gate_tech",
    ("GET", "/api/v1/sync/sites/{site_id}/quarantine"): "admin",
    ("GET", "/api/v1/sync/sites/{site_id}/dead-letters"): "admin",
    # "gate": HTTP Basic with a gate's own credentials; no staff or customer token opens it.
    ("GET", "/api/v1/sync/sites/{site_code}/snapshot"): "gate",
    ("GET", "/api/v1/health"): "public",
    # Handheld verification (核销): the verifier role, the ticket window and gate technicians; finance reads.
    ("GET", "/api/v1/verify/lookup"): "admin cashier gate_tech verifier",
    ("POST", "/api/v1/verify"): "admin cashier gate_tech verifier",
    ("POST", "/api/v1/verify/{verification_id}/undo"): "admin cashier gate_tech verifier",
    ("GET", "/api/v1/verify/list"): "admin cashier finance gate_tech verifier",
    # OTA channels: the platforms' notifications are public (their signature is the auth); the back office
    # configures channels (admin) and watches and retries the verify calls (admin, finance).
    ("POST", "/api/v1/channels/{code}/notify"): "public",
    ("POST", "/api/v1/channels/{code}/notify/{action}"): "public",
    ("GET", "/api/v1/channels"): "admin",
    ("PUT", "/api/v1/channels/{code}"): "admin",
    ("GET", "/api/v1/channels/{code}/skus/{sku}"): "admin",
    ("PUT", "/api/v1/channels/{code}/skus/{sku}"): "admin",
    ("DELETE", "/api/v1/channels/{code}/skus/{sku}"): "admin",
    ("GET", "/api/v1/channels/calls"): "admin finance",
    ("POST", "/api/v1/channels/calls/{call_id}/retry"): "admin finance",
    # --- issue 13: orders back office (H4) ---
    ("GET", "/api/v1/orders/search"): "admin cashier finance",
    ("GET", "/api/v1/customers/{customer_id}/orders"): "admin cashier finance",
    ("GET", "/api/v1/refunds"): "admin finance",
    # Refund review: the window or an admin asks, an admin or finance (never the one who asked) decides.
    ("POST", "/api/v1/orders/{order_id}/refund-reviews"): "admin cashier",
    ("GET", "/api/v1/refund-reviews"): "admin cashier finance",
    ("GET", "/api/v1/refund-reviews/{review_id}"): "admin cashier finance",
    ("POST", "/api/v1/refund-reviews/{review_id}/approve"): "admin finance",
    ("POST", "/api/v1/refund-reviews/{review_id}/deny"): "admin finance",
    # --- issue 13: products back office (H5) ---
    ("GET", "/api/v1/sites/{site_id}/products/all"): "admin cashier finance",
    ("GET", "/api/v1/products/{product_id}"): "admin cashier finance",
    ("PATCH", "/api/v1/products/{product_id}"): "admin",
    ("POST", "/api/v1/products/{product_id}/activate"): "admin",
    ("POST", "/api/v1/products/{product_id}/price-changes"): "admin",
    ("GET", "/api/v1/products/{product_id}/price-changes"): "admin finance",
    ("POST", "/api/v1/price-changes/{change_id}/withdraw"): "admin",
    ("GET", "/api/v1/sites/{site_id}/holidays"): "admin cashier finance",
    ("DELETE", "/api/v1/sites/{site_id}/holidays/{day}"): "admin",
    ("GET", "/api/v1/sites/{site_id}/ticket-layout"): "admin cashier",
    ("PUT", "/api/v1/sites/{site_id}/ticket-layout"): "admin",
    # --- issue 13: gates and passes (H6) ---
    ("POST", "/api/v1/tickets/{ticket_id}/block"): "admin cashier",
    ("POST", "/api/v1/tickets/{ticket_id}/unblock"): "admin cashier",
    ("GET", "/api/v1/tickets/{ticket_id}/blocks"): "admin cashier",
    ("GET", "/api/v1/gates/{gate_id}/rules"): "admin gate_tech",
    ("PUT", "/api/v1/gates/{gate_id}/rules"): "admin",
    ("DELETE", "/api/v1/gates/{gate_id}/rules"): "admin",
    # --- issue 13: staff and points (H7) ---
    ("POST", "/api/v1/auth/refresh"): "public",
    ("POST", "/api/v1/auth/logout"): "admin cashier coach finance gate_tech rental_clerk verifier",
    ("GET", "/api/v1/staff/{staff_id}"): "admin",
    ("POST", "/api/v1/staff/{staff_id}/logout"): "admin",
    ("GET", "/api/v1/points/rules"): "admin finance",
    ("PUT", "/api/v1/points/rules"): "admin",
    # --- issue 13: sell path and scale-out (H1, H3) ---
    ("POST", "/api/v1/orders/counter-sale"): "admin cashier",
    # --- issue 14: rentals (R) ---
    ("POST", "/api/v1/rentals/sites/{site_id}/items"): "admin",
    ("GET", "/api/v1/rentals/sites/{site_id}/items"): "public",
    ("PATCH", "/api/v1/rentals/items/{item_id}"): "admin",
    ("PUT", "/api/v1/rentals/items/{item_id}/stock"): "admin",
    ("POST", "/api/v1/rentals/items/{item_id}/assets"): "admin",
    ("GET", "/api/v1/rentals/items/{item_id}/assets"): "admin rental_clerk",
    ("PATCH", "/api/v1/rentals/assets/{asset_id}"): "admin rental_clerk",
    ("GET", "/api/v1/rentals/assets/by-tag"): "admin cashier rental_clerk verifier",
    ("POST", "/api/v1/rentals/orders"): "admin customer rental_clerk",
    ("GET", "/api/v1/rentals/orders"): "admin cashier rental_clerk",
    ("GET", "/api/v1/rentals/orders/{order_id}"): "admin cashier customer rental_clerk",
    ("POST", "/api/v1/rentals/orders/{order_id}/payments/counter"): "admin rental_clerk",
    ("POST", "/api/v1/rentals/orders/{order_id}/hand-out"): "admin rental_clerk verifier",
    ("POST", "/api/v1/rentals/orders/{order_id}/return"): "admin rental_clerk verifier",
    ("POST", "/api/v1/rentals/orders/{order_id}/close"): "admin rental_clerk",
    # --- issue 14: coaches and lessons (L) ---
    ("POST", "/api/v1/coaches"): "admin",
    ("GET", "/api/v1/coaches"): "admin cashier coach customer",
    ("GET", "/api/v1/coaches/me/lessons"): "coach",
    ("GET", "/api/v1/coaches/{coach_id}/lessons"): "admin cashier",
    ("PATCH", "/api/v1/coaches/{coach_id}"): "admin",
    ("POST", "/api/v1/coaches/{coach_id}/availability"): "admin",
    ("GET", "/api/v1/coaches/{coach_id}/schedule"): "admin cashier coach customer",
    ("POST", "/api/v1/lessons/products"): "admin",
    ("GET", "/api/v1/lessons/products"): "admin cashier coach customer",
    ("POST", "/api/v1/classes"): "admin",
    ("GET", "/api/v1/classes"): "admin cashier coach customer",
    ("GET", "/api/v1/classes/{class_id}"): "admin cashier coach customer",
    ("POST", "/api/v1/classes/{class_id}/cancel"): "admin",
    ("POST", "/api/v1/lessons/bookings"): "admin cashier customer",
    ("GET", "/api/v1/lessons/bookings"): "admin cashier verifier",
    ("GET", "/api/v1/lessons/bookings/{booking_id}"): "admin cashier coach customer verifier",
    ("POST", "/api/v1/lessons/bookings/{booking_id}/cancel"): "admin cashier customer",
    ("POST", "/api/v1/lessons/bookings/{booking_id}/check-in"): "admin coach verifier",
    # --- issue 14: reports (P) ---
    ("POST", "/api/v1/reports/cash-ups"): "admin cashier rental_clerk",
    ("GET", "/api/v1/reports/cash-ups"): "admin cashier finance rental_clerk",
    ("GET", "/api/v1/reports/cash-ups/{cash_up_id}"): "admin cashier finance rental_clerk",
    ("GET", "/api/v1/reports/charts/entries-hourly"): "admin finance",
    ("GET", "/api/v1/reports/charts/sales-channels"): "admin finance",
    ("GET", "/api/v1/reports/{name}"): "admin finance",
}

ROLES: list[Role | None] = [*Role, None]  # None: nobody signed in


def _deps(dependant: Any) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _deps(sub)


def routes(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    for r in app.routes:
        if hasattr(r, "original_router"):  # routers included under the API prefix
            for x in r.original_router.routes:
                if isinstance(x, APIRoute):
                    yield API_PREFIX + x.path, x
        elif isinstance(r, APIRoute):
            yield r.path, r


def declared(app: FastAPI) -> dict[tuple[str, str], str]:
    out = {}
    for path, route in routes(app):
        calls = [c for c in _deps(route.dependant) if isinstance(c, require) or c in (public, authenticated_gate)]
        if any(c is public for c in calls):
            who = "public"
        elif any(c is authenticated_gate for c in calls):
            who = "gate"
        else:
            who = " ".join(sorted(r.value for c in calls if isinstance(c, require) for r in c.roles))
        for method in route.methods or ():
            out[(method, path)] = who
    return out


@pytest.fixture(scope="module")
def matrix_app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('matrix')) / 'cloud.db'}"
    build_schema(url)
    settings = cloud_settings(url)
    return create_app(settings, expiry_every_s=0)


def test_every_endpoint_declares_who_may_call_it_as_reviewed(matrix_app: FastAPI) -> None:
    got = declared(matrix_app)
    undeclared = sorted(k for k, v in got.items() if not v)
    assert undeclared == [], "endpoints without require(...) or public"
    assert got == EXPECTED


def test_the_declared_policy_is_what_the_api_enforces(matrix_app: FastAPI) -> None:
    with TestClient(matrix_app) as client:
        api = Api(client, matrix_app)
        failures = []
        # Signing out ends the caller's sessions (every later call of that role would be 401): it goes last.
        for (method, path), who in sorted(EXPECTED.items(), key=lambda kv: (kv[0][1].endswith("/auth/logout"), kv)):
            url = re.sub(r"\{[^}]+\}", "1", path)
            for role in ROLES:
                r = api.as_(role).request(method, url, json={} if method in ("POST", "PUT") else None)
                allowed = who == "public" or (role is not None and role.value in who.split())
                if (role is None and not allowed) or who == "gate":  # "gate": no token is a gate's credentials
                    ok = r.status_code == 401
                elif not allowed:
                    ok = r.status_code == 403
                else:
                    ok = r.status_code not in (401, 403) or path.endswith("/wechat/notify")
                if not ok:
                    failures.append(f"{method} {path} as {role}: {r.status_code}")
        assert failures == []
