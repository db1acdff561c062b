from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from cloud.tickets.models import TicketState
from models import ProductKind


class TicketOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    ticket_no: int = Field(description="The number the signed QR carries (same as id)")
    order_id: int
    order_item_id: int
    site_id: int
    product_id: int
    kind: ProductKind
    visit_date: date
    valid_from: datetime
    valid_until: datetime
    entries: int | None
    window_minutes: int | None = Field(description="time_window tickets: minutes of use from the first entry")
    holder_id: int | None
    price_fen: int
    status: TicketState
    entries_used: int
    first_entry_at: datetime | None
    token: str = Field(description="The signed credential the QR code holds")
    code: str | None = Field(default=None, description="OTA tickets: the plain voucher code a gate also admits")
    issued_at: datetime
