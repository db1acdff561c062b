"""The page's read and act routes: status, decisions (list and live stream), journal, camera, actions,
config, and /metrics (bearer token, no session)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import unicodedata
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from edge.vitals import ActionName
from edge.web import errors
from edge.web.auth import same_token
from edge.web.port import DecisionView
from edge.web.state import acting_session, current_session, read_json, web_state

JUSTIFICATION_MIN = 5
JUSTIFICATION_MAX = 500
MAX_LIMIT = 500
MAX_TICKET = 128
ACTIONS: dict[str, ActionName] = {
    "test-open": "test_open",
    "keep-open": "keep_open",
    "resync": "resync",
    "reload-config": "reload_config",
}


def _limit(request: Request, default: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return default
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_LIMIT:
        raise errors.bad_request("limit", f"limit: 1 to {MAX_LIMIT}", f"limit 须为 1 至 {MAX_LIMIT}")
    return n


def _time(request: Request, name: str) -> datetime | None:
    """An ISO 8601 time from the query. One without a zone is the gate's local time (what the technician's
    form and the gate's clock show), returned in UTC like the journal."""
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    try:
        t = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise errors.bad_request(name, f"{name}: an ISO 8601 time", f"{name} 须为 ISO 8601 时间") from exc
    return (t if t.tzinfo is not None else t.astimezone()).astimezone(UTC)


async def status(request: Request) -> JSONResponse:
    await current_session(request)
    return JSONResponse(web_state(request).panel.vitals().as_json())


async def decisions(request: Request) -> JSONResponse:
    await current_session(request)
    views = await web_state(request).panel.recent(_limit(request, 50))
    return JSONResponse({"decisions": [v.as_json() for v in views]})


def _sse(view: DecisionView) -> str:
    return f"event: decision\ndata: {json.dumps(view.as_json(), ensure_ascii=False)}\n\n"


async def decision_stream(request: Request) -> StreamingResponse:
    """Live decisions as server-sent events, a `: ping` comment when quiet. The stream checks its session
    at each event and ping without touching it: an open page alone does not keep a session from going
    idle, and a technician withdrawn in the cloud stops receiving within one ping."""
    s = await current_session(request)
    st = web_state(request)
    queue = st.panel.subscribe()

    async def events() -> AsyncIterator[str]:
        try:
            yield "retry: 3000\n\n"
            while not st.closing.is_set():
                get = asyncio.ensure_future(queue.get())
                closing = asyncio.ensure_future(st.closing.wait())
                try:
                    done, _ = await asyncio.wait({get, closing}, timeout=st.ping_s, return_when="FIRST_COMPLETED")
                finally:
                    for task in (get, closing):
                        if not task.done():
                            task.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await task
                live = st.sessions.peek(s.token, st.monotonic()) is not None and st.still_allowed(s)
                if not live:
                    st.sessions.drop(s.token)
                    return
                if get in done:
                    yield _sse(get.result())
                elif not done:
                    yield ": ping\n\n"
        finally:
            st.panel.unsubscribe(queue)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})


async def journal(request: Request) -> JSONResponse:
    await current_session(request)
    ticket = request.query_params.get("ticket", "").strip() or None
    if ticket is not None and len(ticket) > MAX_TICKET:
        raise errors.bad_request("ticket", "ticket: too long", "票号过长")
    page = await web_state(request).panel.search(
        ticket=ticket, since=_time(request, "since"), until=_time(request, "until"), limit=_limit(request, 100)
    )
    return JSONResponse(
        {"decisions": [d.as_json() for d in page.decisions], "actions": [a.as_json() for a in page.actions]}
    )


async def camera(request: Request) -> Response:
    await current_session(request)
    panel = web_state(request).panel
    if not panel.has_camera():
        raise errors.no_camera()
    jpeg = await panel.camera_jpeg()
    if jpeg is None:
        raise errors.no_frame()
    return Response(jpeg, media_type="image/jpeg")


async def action(request: Request) -> JSONResponse:
    """One technician action with a typed justification: 200 done, 409 refused by the gate (its code)."""
    name = ACTIONS.get(request.path_params["name"])
    if name is None:
        raise errors.not_found()
    s = await acting_session(request)
    body = await read_json(request)
    why = body.get("justification")
    if not isinstance(why, str):
        raise errors.justification(0, JUSTIFICATION_MIN, JUSTIFICATION_MAX)
    why = " ".join(why.split())  # one line in the journal and the log, however it was typed or pasted
    if not JUSTIFICATION_MIN <= len(why) <= JUSTIFICATION_MAX or any(unicodedata.category(c) == "Cc" for c in why):
        raise errors.justification(len(why), JUSTIFICATION_MIN, JUSTIFICATION_MAX)
    on = body.get("on")
    if name == "keep_open" and not isinstance(on, bool):
        raise errors.bad_request("on", "on: true or false", "on 须为 true 或 false")
    result = await web_state(request).panel.act(
        name, username=s.username, justification=why, on=on if name == "keep_open" else None
    )
    return JSONResponse(result.as_json(), status_code=200 if result.ok else 409)


async def config(request: Request) -> JSONResponse:
    await current_session(request)
    return JSONResponse(web_state(request).panel.config_view())


async def metrics(request: Request) -> Response:
    """Prometheus text for a scraper holding the bearer token; no token configured: 404 `metrics_off`.
    The exposition is built on the loop: its collector reads the daemon's state, which is the loop's."""
    st = web_state(request)
    if st.metrics_token is None:
        raise errors.metrics_off()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not same_token(token.strip(), st.metrics_token):
        raise errors.metrics_token()
    body, content_type = st.panel.metrics()
    return Response(body, headers={"content-type": content_type})


routes = [
    Route("/api/status", status, methods=["GET"]),
    Route("/api/decisions", decisions, methods=["GET"]),
    Route("/api/decisions/stream", decision_stream, methods=["GET"]),
    Route("/api/journal", journal, methods=["GET"]),
    Route("/api/camera.jpg", camera, methods=["GET"]),
    Route("/api/actions/{name}", action, methods=["POST"]),
    Route("/api/config", config, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
