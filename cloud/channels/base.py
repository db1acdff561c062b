"""The contract between the channel machinery and one platform's adapter.

The machinery (`service.py`, `calls.py`) owns the database, idempotency and retries; an adapter owns only the
platform's wire form: how an inbound request is authenticated and read (`authenticate`, `parse`), how an
outcome is answered in the platform's expected form (`answer`), and how one verify call is sent and judged
(`send`). Adapters are pure apart from `send`, which speaks HTTP through the client it is given.

Resends and replays (every platform resends a notification it got no good answer to):
- the same message again (same `Authentic.fingerprint`) within the freshness window gets the stored first
  answer and changes nothing (Ctrip: "同批次请求时请返回相同的结果");
- a message whose timestamp is outside the channel's window is `Rejected("stale")`;
- a nonce seen before with a different message is `Rejected("replay")` (only platforms that send a nonce);
- a new message about an order we already have (Douyin resends with a new timestamp) is answered from the
  order we made the first time: idempotent by the platform's order id, and refunds by the platform's refund id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, ClassVar, Literal, Protocol

import httpx

CHANNEL_CODES = ("douyin", "meituan", "ctrip", "lebingxue")


@dataclass(frozen=True, slots=True)
class ChannelAccount:
    """One channel's configuration: `config` from the database (non-secret: account ids, base URL, store id ...),
    `secrets` from the cloud's settings (`STARFISH_CHANNEL_SECRETS_FILE` / `_JSON`), never stored in the database."""

    code: str
    base_url: str
    freshness_s: int
    config: Mapping[str, str]
    secrets: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """A request the platform sent us, as received: `body` is the raw bytes (signatures cover the raw bytes)."""

    action: str  # the last path segment after /channels/{code}/notify ("" when none)
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: bytes


@dataclass(frozen=True, slots=True)
class Authentic:
    """A request whose signature holds and whose timestamp is fresh."""

    fingerprint: str  # identifies this exact message (e.g. sha256 of the signed text): a resend has the same one
    nonce: str | None  # a platform-sent nonce that must never come back with another message; None: none sent
    payload: Any  # the decoded (decrypted, parsed) message, for `parse` and `answer`


RejectKind = Literal["bad_signature", "stale", "replay", "unknown_account", "malformed", "disabled"]


@dataclass(frozen=True, slots=True)
class Rejected:
    """Refused before anything was read: nothing is stored and nothing changes."""

    kind: RejectKind
    message: str


# ---- what the platform asks (parse's result) ----


@dataclass(frozen=True, slots=True)
class OrderLine:
    sku: str  # the platform's SKU / PLU / deal id, mapped to one of our products by `channel_skus`
    quantity: int
    unit_price_fen: int | None  # what the buyer paid per unit, when the platform says
    visit_date: date | None  # None: the platform sells undated vouchers; the adapter's docstring says what then
    ref: str = ""  # the platform's line id (Ctrip itemId), kept for the answers and the verify call
    # An undated voucher's last valid day: the ticket is open-dated, valid from visit_date (None: today) through
    # this day, and refundable unused until the product's cutoff before it. None: a ticket for one visit day.
    last_day: date | None = None


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """A new order. `paid`: the buyer has paid (issue tickets now); otherwise hold the stock until `PayOrder`."""

    order_ref: str
    lines: tuple[OrderLine, ...]
    paid: bool
    phone: str | None = None
    name: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # platform data kept with the order (ChannelOrder.extra)


@dataclass(frozen=True, slots=True)
class PayOrder:
    order_ref: str
    extra: Mapping[str, Any] = field(default_factory=dict)  # merged into ChannelOrder.extra


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """Cancel an unpaid order and give its stock back (Ctrip CancelPreOrder)."""

    order_ref: str


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """The platform asks to refund (`decided=False`: we approve or deny by our refund rules) or tells us it has
    refunded (`decided=True`, e.g. Douyin's refund-info sync after its 24 h auto-approval: revoke, no decision).

    Which tickets: `codes` (our voucher codes) when the platform names them, else `quantity` of the order's
    unused tickets, else (both None) every unused ticket of the order."""

    order_ref: str
    refund_ref: str  # the platform's refund / after-sale id: idempotency key of the refund
    codes: tuple[str, ...] | None = None
    quantity: int | None = None
    decided: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class QueryOrder:
    order_ref: str


Intent = PlaceOrder | PayOrder | CancelOrder | RefundRequest | QueryOrder


class Malformed(Exception):
    """`parse` could not read the message (a field missing or of the wrong type); the text says which."""


# ---- what we decided (answer's input) ----


@dataclass(frozen=True, slots=True)
class Voucher:
    ticket_id: int
    code: str  # our plain voucher code (`models.voucher`), what the platform shows the buyer
    sku: str
    visit_date: date
    state: Literal["valid", "used", "refunded", "revoked"]
    entries_used: int
    line_ref: str = ""


@dataclass(frozen=True, slots=True)
class OrderOutcome:
    """The order as it now stands (for PlaceOrder, PayOrder, CancelOrder, QueryOrder)."""

    order_ref: str
    order_number: str  # ours (supplierOrderId, partnerOrderId, third_order_id ...)
    status: str  # our order status: pending | issued | used | refunded | cancelled | expired
    vouchers: tuple[Voucher, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    """Approved: these vouchers are revoked (and go down the feed). Denied: `code` says why, in our refund
    rules' words (ticket_used, past_cutoff, not_refundable, already_refunded, wrong_quantity, unknown_order)."""

    order_ref: str
    refund_ref: str
    approved: bool
    code: str
    message: str
    vouchers: tuple[Voucher, ...]


FailureCode = Literal[
    "unknown_sku", "sold_out", "not_on_sale", "bad_date", "price_mismatch", "unknown_order", "not_paid", "invalid"
]


@dataclass(frozen=True, slots=True)
class Failure:
    """The request was authentic but cannot be done; the adapter maps `code` to the platform's error form."""

    code: FailureCode
    message: str


Outcome = OrderOutcome | RefundOutcome | Failure


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=lambda: {"content-type": "application/json"})


# ---- the verify call (us -> platform) ----


@dataclass(frozen=True, slots=True)
class UsedEntry:
    ticket_id: int
    code: str
    line_ref: str
    used_at: datetime  # when the gate or handheld admitted it (back-dated calls: an offline gate's passage)


@dataclass(frozen=True, slots=True)
class VerifyCall:
    """One persisted call: the same `idempotency_key` and the same data on every attempt, so the platform sees a
    resend, not a second use. Built from the stored row, so a restarted cloud sends exactly what it would have."""

    call_id: int
    idempotency_key: str  # Douyin verify_token, Meituan/乐冰雪 request id, Ctrip sequenceId (32 chars + date)
    created_at: datetime
    order_ref: str
    order_number: str
    order_extra: Mapping[str, Any]
    entries: tuple[UsedEntry, ...]  # what this call reports as used
    used_total: int  # the order's entries used so far, this call's included (Ctrip's cumulative useQuantity)
    quantity_total: int  # the order's tickets


CallVerdict = Literal["done", "retry", "give_up"]


@dataclass(frozen=True, slots=True)
class CallResult:
    """`done`: the platform took it (or says it already had it); `retry`: transport error, 5xx or a retryable
    code; `give_up`: the platform refuses it for good (shown in the back office's failing list)."""

    verdict: CallVerdict
    detail: str  # what the platform said, for last_error and the back office
    reply: Mapping[str, Any] = field(default_factory=dict)  # ids to keep (Douyin verify_id, certificate_id)


class ChannelAdapter(Protocol):
    code: ClassVar[str]

    def authenticate(self, request: InboundRequest, account: ChannelAccount, now: datetime) -> Authentic | Rejected:
        """Check the signature over the raw bytes and the timestamp's freshness; decrypt if the platform encrypts."""
        ...

    def parse(self, message: Authentic, request: InboundRequest) -> Intent:
        """What the platform asks; raise `Malformed` if it cannot be read."""
        ...

    def answer(self, message: Authentic | None, outcome: Outcome | Rejected, account: ChannelAccount) -> HttpAnswer:
        """The platform's expected success or error form (`message` is None when authentication failed)."""
        ...

    def send(self, call: VerifyCall, account: ChannelAccount, http: httpx.Client, now: datetime) -> CallResult:
        """Send one verify call and judge the reply. Never raises for the platform's answers or network errors."""
        ...
