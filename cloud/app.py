"""The cloud service: FastAPI app factory, routers under /api/v1, background expiry of unpaid orders."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI
from sqlalchemy.orm import Session, sessionmaker

from cloud.db import make_engine, make_sessionmaker, utcnow
from cloud.deps import public
from cloud.errors import install_handlers
from cloud.metrics import install as install_metrics
from cloud.settings import Settings
from models.api import API_PREFIX

log = logging.getLogger("starfish.cloud")


def _routers() -> list[APIRouter]:
    from cloud.audit.routes import router as audit
    from cloud.channels.routes import router as channels
    from cloud.customers.routes import router as customers
    from cloud.faces.routes import router as faces
    from cloud.lessons.routes import router as lessons
    from cloud.orders.backoffice import router as order_backoffice
    from cloud.orders.routes import router as orders
    from cloud.payments.routes import router as payments
    from cloud.points.routes import router as points
    from cloud.products.routes import router as products
    from cloud.refunds.routes import router as refunds
    from cloud.rentals.routes import router as rentals
    from cloud.reports.routes import router as reports
    from cloud.sites.routes import router as sites
    from cloud.staff.routes import router as staff
    from cloud.sync.routes import router as sync
    from cloud.tickets.routes import router as tickets
    from cloud.verify.routes import router as verify

    return [
        order_backoffice,  # before orders: /orders/search is not an order id
        *(staff, sites, products, customers, faces, orders, payments, tickets, refunds, points, audit, sync, verify),
        channels,
        lessons,
        reports,
        rentals,
    ]


async def _expiry_loop(factory: sessionmaker[Session], settings: Settings, every_s: float) -> None:
    from cloud.channels.calls import sweep_messages
    from cloud.faces.gallery import sweep
    from cloud.lessons.cancel import cancel_short_classes
    from cloud.orders.service import expire_pending
    from cloud.refunds.payout import sweep_with as refund_sweep

    while True:
        await asyncio.sleep(every_s)
        try:
            with factory() as session:
                n = await asyncio.to_thread(expire_pending, session, utcnow())
            if n:
                log.info("expired %d unpaid order(s)", n)
        except Exception:
            log.exception("order expiry failed; will retry")
        try:  # group classes (拼班) at their cutoff: confirmed, or cancelled and refunded below the minimum
            with factory() as session:
                n = await asyncio.to_thread(lambda: cancel_short_classes(session, settings, utcnow()))
            if n:
                log.info("class sweep: %d group class(es) decided or held", n)
        except Exception:
            log.exception("class sweep failed; will retry")
        try:  # faces of passes that ended: deleted on the gates, and in the cloud when no pass is left
            with factory() as session:
                n = await asyncio.to_thread(lambda: sweep(session, settings, now=utcnow()))
            if n:
                log.info("face sweep: %d holder(s) whose pass ended", n)
        except Exception:
            log.exception("face sweep failed; will retry")
        try:  # WeChat refunds to send again, and those whose notification never came
            with factory() as session:
                n = await asyncio.to_thread(lambda: refund_sweep(session, settings, now=utcnow()))
            if n:
                log.info("refund sweep: %d WeChat refund(s) sent or checked", n)
        except Exception:
            log.exception("refund sweep failed; will retry")
        try:  # channel messages old enough that a resend of them would be stale anyway
            with factory() as session:
                await asyncio.to_thread(lambda: sweep_messages(session, utcnow()))
        except Exception:
            log.exception("channel message sweep failed; will retry")


async def _channel_calls_loop(factory: sessionmaker[Session], settings: Settings) -> None:
    """The OTA platforms' verify calls, every `channel_calls_every_s`: each batch is drained (each result
    committed) until none is due, so a skier's entry reaches the platform within seconds."""
    from cloud.channels.calls import BATCH, send_due

    while True:
        await asyncio.sleep(settings.channel_calls_every_s)
        try:
            with factory() as session:
                while (n := await asyncio.to_thread(lambda: send_due(session, settings))) > 0:
                    log.info("channel calls: %d verify call(s) tried", n)
                    if n < BATCH:
                        break
        except Exception:
            log.exception("channel calls failed; will retry")


def create_app(settings: Settings | None = None, *, expiry_every_s: float = 30.0, threads: int = 8) -> FastAPI:
    settings = settings or Settings()
    engine = make_engine(settings.database_url)
    factory = make_sessionmaker(engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Few threads: the endpoints are CPU-bound Python; many threads only fight over the GIL.
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        # Sync: the current public keys onto every site's feed; the MQTT loop only if STARFISH_MQTT_HOST is set.
        # Every process's feed appends NOTIFY (PostgreSQL): the one publishing may be another (cloud.sync.leader).
        from cloud.sync.feed import notify_on_commit
        from cloud.sync.mqtt import start as sync_start

        notify_on_commit(factory)

        app.state.sync = await asyncio.to_thread(sync_start, factory, settings)
        tasks = []
        if expiry_every_s > 0:  # tests drive these themselves with expiry_every_s=0
            tasks.append(asyncio.create_task(_expiry_loop(factory, settings, expiry_every_s)))
            tasks.append(asyncio.create_task(_channel_calls_loop(factory, settings)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            if app.state.sync is not None:
                await asyncio.to_thread(app.state.sync.stop)
            engine.dispose()

    app = FastAPI(
        title="Starfish Gate cloud",
        version="1",
        description="Sales, orders, payments, refunds and points; issues the signed tickets gates verify offline.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = factory
    install_handlers(app)
    app.state.metrics = install_metrics(app, factory, settings)
    for router in _routers():
        app.include_router(router, prefix=API_PREFIX)

    @app.get(f"{API_PREFIX}/health", tags=["health"], dependencies=[Depends(public)])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
