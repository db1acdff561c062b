"""An inbound platform request, end to end: authenticate, recognise a resend, do what it asks, answer.

The answer and what it did are committed together with the message (`ChannelMessage`: fingerprint, nonce,
answer bytes), so a resend of the same message gets the very same bytes back and changes nothing, and a
message that was not answered (an error, a crash) changed nothing either and is done when it comes again.

Decisions:
- A request the adapter refuses (signature, freshness, replay) stores nothing and is logged as a warning
  (the kind and the channel only: never a header or the body, which carry signatures and buyers' data).
- A concurrent twin (the platform resending while we are still on the first) loses on a unique key
  (channel_orders, the order's OTA reference, the payment, the message): it is rolled back and done again,
  which now finds the winner's order and answers from it.
- An unexpected error is rolled back and answered HTTP 503 with a small JSON error
  (`{"code": "retry", "message": ...}`): every platform treats a non-2xx answer as "not received" and
  resends, which is what we want; nothing of it was kept.
- A resend gets the stored status and body with a JSON content type (the adapters answer JSON; other
  headers of the first answer are not kept).
- Refunds asked for by a platform are refunded through `cloud.refunds.service.refund` in the same
  transaction as the answer.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloud.channels import registry
from cloud.channels.base import (
    CHANNEL_CODES,
    Authentic,
    ChannelAccount,
    ChannelAdapter,
    Failure,
    HttpAnswer,
    InboundRequest,
    Malformed,
    Outcome,
    PlaceOrder,
    Rejected,
)
from cloud.channels.intents import Refused, channel_order, execute
from cloud.channels.models import Channel, ChannelMessage
from cloud.errors import Conflict, not_found
from cloud.settings import Settings

log = logging.getLogger("starfish.cloud.channels")

ATTEMPTS = 3  # a concurrent twin is done again at most this often before we answer "retry"


def handle(session: Session, settings: Settings, code: str, request: InboundRequest, now: datetime) -> HttpAnswer:
    """Answer one platform request in the platform's own form; 404 (house error) for an unknown channel."""
    if code not in CHANNEL_CODES:
        raise not_found("Channel", "渠道", code)
    adapter = registry.adapter(code)
    account = registry.account(session, settings, code)
    if account is None:
        unusable = registry.account_of(session.get(Channel, code), code, None)
        session.rollback()
        log.warning("refused a %s request: the channel is disabled or not configured", code)
        return adapter.answer(None, Rejected("disabled", f"Channel {code} is not enabled here"), unusable)
    verdict = adapter.authenticate(request, account, now)
    if isinstance(verdict, Rejected):
        session.rollback()
        log.warning("refused a %s request (%s): %s", code, request.action or "-", verdict.kind)
        return adapter.answer(None, verdict, account)
    for _ in range(ATTEMPTS):
        try:
            return _answer_once(session, settings, adapter, account, verdict, request, now)
        except (IntegrityError, Conflict) as exc:
            session.rollback()
            log.info("a concurrent %s request won the race (%s); answering from it", code, type(exc).__name__)
        except Exception:
            session.rollback()
            log.exception("a %s request (%s) failed; the platform will resend it", code, request.action or "-")
            return _retry_later()
    return _retry_later()


def _answer_once(
    session: Session,
    settings: Settings,
    adapter: ChannelAdapter,
    account: ChannelAccount,
    message: Authentic,
    request: InboundRequest,
    now: datetime,
) -> HttpAnswer:
    code = account.code
    seen = session.scalar(
        select(ChannelMessage).where(ChannelMessage.channel == code, ChannelMessage.fingerprint == message.fingerprint)
    )
    if seen is not None:
        session.rollback()
        return HttpAnswer(status=seen.status, body=seen.answer)
    if message.nonce is not None:
        reused = select(ChannelMessage.id).where(ChannelMessage.channel == code, ChannelMessage.nonce == message.nonce)
        if session.scalar(reused) is not None:
            session.rollback()
            log.warning("refused a %s request (%s): replay", code, request.action or "-")
            return adapter.answer(None, Rejected("replay", "This nonce was used by another message"), account)
    outcome: Outcome
    try:
        outcome = execute(session, settings, account, adapter.parse(message, request), now)
    except Malformed as exc:
        outcome = Failure("invalid", str(exc)[:300])
    except Refused as refused:
        session.rollback()
        outcome = refused.failure
        intent = adapter.parse(message, request)
        if isinstance(intent, PlaceOrder) and channel_order(session, code, intent.order_ref) is not None:
            # A twin of this order (a resend with a fresh timestamp) committed while this one waited for the
            # stock's lock: answer from that order, never "sold out" for an order we issued.
            outcome = execute(session, settings, account, intent, now)
    answer = adapter.answer(message, outcome, account)
    session.add(
        ChannelMessage(
            channel=code,
            fingerprint=message.fingerprint,
            nonce=message.nonce,
            status=answer.status,
            answer=answer.body,
            received_at=now,
        )
    )
    session.flush()
    session.commit()
    if isinstance(outcome, Failure):
        log.info("%s request (%s) answered %s: %s", code, request.action or "-", outcome.code, outcome.message)
    return answer


def _retry_later() -> HttpAnswer:
    body = {"code": "retry", "message": "Temporarily unable to process this request; send it again"}
    return HttpAnswer(status=503, body=json.dumps(body).encode())
