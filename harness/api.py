"""The cloud's API in-process (FastAPI TestClient) as a given role sees it: for tests and seeding."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cloud.customers.models import Customer
from cloud.deps import Role
from cloud.settings import Settings
from cloud.staff.models import Staff
from cloud.staff.service import issue_token


class Api:
    """The API as a given role sees it: `api.as_(Role.CASHIER).post(...)`."""

    def __init__(self, client: TestClient, app: FastAPI) -> None:
        self.client = client
        self.app = app
        self._tokens: dict[Role, str] = {}
        self.customer_id: int | None = None

    def token(self, role: Role) -> str:
        """A bearer token for `role`, its staff member or customer created on first use."""
        if role not in self._tokens:
            settings: Settings = self.app.state.settings
            with self.app.state.sessionmaker() as s:
                if role is Role.CUSTOMER:
                    who: Any = Customer(phone="13800000000", nickname="test")
                else:
                    who = Staff(username=f"{role.value}-user", password_hash="!", role=role.value, active=True)
                s.add(who)
                s.commit()
                if role is Role.CUSTOMER:
                    self.customer_id = who.id
                name = who.nickname if role is Role.CUSTOMER else who.username
                self._tokens[role] = issue_token(settings, role=role, subject_id=who.id, name=name)
        return self._tokens[role]

    def as_(self, role: Role | None) -> AuthedClient:
        """A client sending `role`'s token (none for `None`)."""
        return AuthedClient(self.client, None if role is None else self.token(role))


class AuthedClient:
    """A TestClient that adds one bearer token to every request."""

    def __init__(self, client: TestClient, token: str | None) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        return self.client.request(method, url, headers=headers, **kw)

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def put(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("PUT", url, **kw)

    def patch(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("PATCH", url, **kw)

    def delete(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", url, **kw)
