from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from cloud.db import utcnow
from cloud.deps import IdPath, Principal, Role, SessionDep, SettingsDep, TransactionScopedRoute, require
from cloud.orders import sale, service
from cloud.orders.models import OrderStatus
from cloud.orders.schemas import CounterSaleIn, CounterSaleOut, OrderIn, OrderOut, SalePaymentOut, SaleTicketOut
from cloud.settings import Settings

router = APIRouter(tags=["orders"], route_class=TransactionScopedRoute)
Sellers = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.CUSTOMER))]
Cashiers = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER))]
Readers = Annotated[Principal, Depends(require(Role.ADMIN, Role.CASHIER, Role.FINANCE, Role.CUSTOMER))]


@router.post("/orders", status_code=201)
def create_order(
    body: OrderIn,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    actor: Sellers,
    idempotency_key: Annotated[str | None, Header(min_length=8, max_length=100)] = None,
) -> OrderOut:
    """Create a pending order; a retried request with the same Idempotency-Key returns the same order."""
    order, created = service.create_order(session, settings, actor, body, idempotency_key=idempotency_key, now=utcnow())
    if not created:
        response.status_code = 200
    return OrderOut.model_validate(order)


@router.post("/orders/counter-sale", status_code=201, response_model=CounterSaleOut)
async def counter_sale(
    body: CounterSaleIn,
    request: Request,
    settings: SettingsDep,
    actor: Cashiers,
    idempotency_key: Annotated[str | None, Header(min_length=8, max_length=100)] = None,
) -> Response:
    """Sell at the ticket window in one call: the order created, paid (cash or card, exactly its total) and
    issued, its tickets in the answer. A retry with the same Idempotency-Key answers the same sale (200).

    The window's hot path: after `require` (a sync dependency, checked before the body, as everywhere), the
    session, the sale and its JSON answer run in ONE worker thread, not four (a sync route's session opened,
    route run, answer checked, session closed), and the session ends in that thread as
    `TransactionScopedRoute` wants; the answer is the model's JSON, not validated again."""
    return await run_in_threadpool(_counter_sale, request, settings, actor, body, idempotency_key)


def _counter_sale(
    request: Request, settings: Settings, actor: Principal, body: CounterSaleIn, idempotency_key: str | None
) -> Response:
    with request.app.state.sessionmaker() as session:  # closing it rolls back what the sale left open
        done, created = sale.counter_sale(session, settings, actor, body, idempotency_key=idempotency_key, now=utcnow())
        out = CounterSaleOut(
            order=OrderOut.model_validate(done.order),
            payment=SalePaymentOut.model_validate(done.payment),
            tickets=[SaleTicketOut.model_validate(t) for t in done.tickets],
        )
    return Response(out.model_dump_json(), status_code=201 if created else 200, media_type="application/json")


@router.get("/orders")
def list_orders(
    session: SessionDep,
    actor: Readers,
    status: OrderStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[OrderOut]:
    return [OrderOut.model_validate(o) for o in service.list_orders(session, actor, status=status, limit=limit)]


@router.get("/orders/{order_id}")
def get_order(order_id: IdPath, session: SessionDep, actor: Readers) -> OrderOut:
    return OrderOut.model_validate(service.get_order(session, order_id, actor))


@router.post("/orders/{order_id}/cancel")
def cancel_order(order_id: IdPath, session: SessionDep, actor: Sellers) -> OrderOut:
    return OrderOut.model_validate(service.cancel(session, actor, order_id))


@router.post("/orders/expire")
def expire_orders(session: SessionDep, _: Annotated[Principal, Depends(require(Role.ADMIN))]) -> dict[str, int]:
    """Expire unpaid orders now (the service also does this every 30 s)."""
    return {"expired": service.expire_pending(session, utcnow())}
