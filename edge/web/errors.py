"""The technician page's errors: a stable code, English and Chinese text, machine-readable details.

Every error the page's API answers is one JSON object `{code, en, zh, details}` (the same parts as the
cloud's `DomainError`, flat), so the page shows the sentence in the chosen language and tests read the code.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


class WebError(Exception):
    """An answer other than success, mapped to JSON by one handler (`edge.web.app`)."""

    def __init__(
        self,
        status: int,
        code: str,
        en: str,
        zh: str,
        *,
        headers: dict[str, str] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(en)
        self.status = status
        self.code = code
        self.en = en
        self.zh = zh
        self.headers = headers
        self.details = details

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.en, self.zh, headers=self.headers, **self.details)


def error_response(
    status: int, code: str, en: str, zh: str, *, headers: dict[str, str] | None = None, **details: Any
) -> JSONResponse:
    return JSONResponse({"code": code, "en": en, "zh": zh, "details": details}, status_code=status, headers=headers)


def login_required() -> WebError:
    return WebError(401, "login_required", "Please log in", "请先登录")


def bad_login() -> WebError:
    return WebError(401, "bad_login", "Wrong name or password", "用户名或密码错误")


def wrong_host() -> WebError:
    return WebError(
        421,
        "host",
        "This gate does not answer to that host name (web.hostnames lists the names it does)",
        "本闸机不响应该主机名（web.hostnames 中列出可用名称）",
    )


def login_busy() -> WebError:
    return WebError(
        429,
        "login_busy",
        "Another login of this name or from this address is being checked: try again in a moment",
        "该用户名或该地址的另一次登录正在校验，请稍后再试",
        headers={"Retry-After": "1"},
        retry_after_s=1,
    )


def locked_out(retry_after_s: int) -> WebError:
    return WebError(
        429,
        "locked_out",
        f"Too many failed logins: try again in {retry_after_s} s",
        f"登录失败次数过多，请 {retry_after_s} 秒后再试",
        headers={"Retry-After": str(retry_after_s)},
        retry_after_s=retry_after_s,
    )


def csrf() -> WebError:
    return WebError(
        403, "csrf", "The page's security token is missing or wrong: reload the page", "安全令牌缺失或错误，请刷新页面"
    )


def origin() -> WebError:
    return WebError(403, "origin", "Requests from another site are refused", "拒绝来自其他站点的请求")


def bad_request(field: str, en: str, zh: str) -> WebError:
    return WebError(422, "bad_request", en, zh, field=field)


def justification(length: int, lo: int, hi: int) -> WebError:
    return WebError(
        422,
        "justification",
        f"Type a justification of {lo} to {hi} characters",
        f"请填写 {lo} 至 {hi} 个字的理由",
        length=length,
        min=lo,
        max=hi,
    )


def too_large(limit: int) -> WebError:
    return WebError(413, "too_large", "The request is too large", "请求内容过大", limit=limit)


def no_camera() -> WebError:
    return WebError(404, "no_camera", "This gate has no camera", "此闸机没有摄像头")


def no_frame() -> WebError:
    return WebError(503, "no_frame", "No camera frame yet", "暂无摄像头画面")


def metrics_off() -> WebError:
    return WebError(404, "metrics_off", "Metrics are not served: no token is configured", "未配置令牌，不提供监控指标")


def metrics_token() -> WebError:
    return WebError(
        401,
        "metrics_token",
        "A valid bearer token is needed for /metrics",
        "访问 /metrics 需要有效的令牌",
        headers={"WWW-Authenticate": "Bearer"},
    )


def not_found() -> WebError:
    return WebError(404, "not_found", "No such page", "页面不存在")


def method_not_allowed() -> WebError:
    return WebError(405, "method_not_allowed", "Method not allowed", "不支持此请求方法")


def internal() -> WebError:
    return WebError(500, "internal_error", "The gate could not answer: see its log", "闸机内部错误，请查看日志")
