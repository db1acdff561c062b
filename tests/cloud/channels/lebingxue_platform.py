"""A stand-in of 乐冰雪 on loopback, speaking our documented contract (`cloud/channels/lebingxue.py`): it signs
the notifications it sends the cloud, and serves `/v1/redemptions`, where it checks our signature and the
idempotency key, can fail the first K calls, and can refuse every call for good."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from cloud.channels.lebingxue import sign, signed_headers
from cloud.db import utcnow
from tests.cloud.channels.kit import TEST_SECRETS, Received, StandIn, post

SECRET = TEST_SECRETS["lebingxue"]["secret"]
NOTIFY_PATH = "/api/v1/channels/lebingxue/notify/{action}"


@dataclass
class Lebingxue:
    """乐冰雪: what it received on /v1/redemptions, and how it answers the next ones."""

    fail_first: int = 0  # answer 503 to this many redemption calls first
    refuse: bool = False  # answer 400 to every redemption call (a refusal for good)
    bad_signatures: int = 0
    redemptions: list[Received] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # idempotency keys taken (each once)
    server: StandIn | None = None

    def handle(self, got: Received) -> tuple[int, Mapping[str, str], bytes]:
        if got.path != "/v1/redemptions" or got.method != "POST":
            return 404, {}, b'{"code":404,"message":"not found"}'
        ts, nonce = got.headers.get("x-lbx-timestamp", ""), got.headers.get("x-lbx-nonce", "")
        if got.headers.get("x-lbx-signature") != sign(SECRET, ts, nonce, got.path, got.body):
            self.bad_signatures += 1
            return 401, {}, b'{"code":1001,"message":"bad signature"}'
        key = got.headers.get("idempotency-key", "")
        if not key:
            return 400, {}, b'{"code":1005,"message":"Idempotency-Key required"}'
        self.redemptions.append(got)
        if self.refuse:
            return 400, {}, b'{"code":2006,"message":"unknown voucher"}'
        if self.fail_first > 0:
            self.fail_first -= 1
            return 503, {}, b'{"code":5000,"message":"busy"}'
        if key in self.keys:
            return 409, {}, b'{"code":4090,"message":"already redeemed"}'
        self.keys.append(key)
        return (
            200,
            {},
            json.dumps({"code": 0, "message": "ok", "data": {"redemption_id": f"R{len(self.keys)}"}}).encode(),
        )

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.base_url

    def notify(
        self,
        cloud_url: str,
        action: str,
        payload: Mapping[str, Any],
        *,
        now: datetime | None = None,
        nonce: str | None = None,
        secret: str = SECRET,
        raw: bytes | None = None,
    ) -> httpx.Response:
        """Send one signed notification to the cloud over a real socket."""
        body = raw if raw is not None else json.dumps(payload, ensure_ascii=False).encode()
        path = NOTIFY_PATH.format(action=action)
        headers = {"content-type": "application/json", **signed_headers(secret, path, body, now or utcnow(), nonce)}
        return post(cloud_url + path, body, headers)

    def signed(
        self, action: str, payload: Mapping[str, Any], *, now: datetime | None = None
    ) -> tuple[str, bytes, dict[str, str]]:
        """A notification made once (path, body, headers), to be sent several times exactly as it is."""
        body = json.dumps(payload, ensure_ascii=False).encode()
        path = NOTIFY_PATH.format(action=action)
        return path, body, {"content-type": "application/json", **signed_headers(SECRET, path, body, now or utcnow())}


@contextmanager
def lebingxue(**kwargs: Any) -> Iterator[Lebingxue]:
    platform = Lebingxue(**kwargs)
    platform.server = StandIn(platform.handle).start()
    try:
        yield platform
    finally:
        platform.server.stop()
