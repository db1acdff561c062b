"""Domain errors: a stable code, a message in en and zh-CN, and an HTTP status; one handler maps them."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError


class DomainError(Exception):
    status_code = 400

    def __init__(self, code: str, en: str, zh: str, *, status_code: int | None = None, **details: Any) -> None:
        super().__init__(en)
        self.code = code
        self.en = en
        self.zh = zh
        self.details = details
        if status_code is not None:
            self.status_code = status_code


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class Forbidden(DomainError):
    status_code = 403


class Unauthorized(DomainError):
    status_code = 401


def not_found(what: str, what_zh: str, ident: object) -> NotFound:
    return NotFound(
        f"{what.lower().replace(' ', '_')}_not_found", f"{what} {ident} not found", f"未找到{what_zh} {ident}"
    )


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(DataError)
    async def _data_error(_request: Request, exc: DataError) -> JSONResponse:
        # A safety net: a value the schema let through but the database refuses (out of range, ...).
        body = {"code": "value_out_of_range", "message": "A value is out of range", "message_zh": "数值超出范围"}
        return JSONResponse({"error": body}, status_code=422)

    @app.exception_handler(DomainError)
    async def _domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        body: dict[str, Any] = {"code": exc.code, "message": exc.en, "message_zh": exc.zh}
        if exc.details:
            body["details"] = exc.details
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse({"error": body}, status_code=exc.status_code, headers=headers)
