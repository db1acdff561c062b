"""A ticket's QR code (PNG, SVG) and the paper ticket for the window printer (PDF)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

import segno
from fpdf import FPDF

from models import ProductKind

QR_BORDER = 4  # the quiet zone the QR standard asks for, in modules

# fpdf2's core fonts cover Latin-1 only. A CJK font is used when the host has one (Debian: fonts-wqy-microhei,
# fonts-wqy-zenhei or fonts-noto-cjk); without one the paper ticket falls back to its ASCII fields.
CJK_FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf"),
    Path("/usr/share/fonts/truetype/noto/NotoSansSC-Regular.ttf"),
)


def qr_code(token: str) -> segno.QRCode:
    # Error level M exactly (no boosting), so every printed ticket looks alike to the scanners.
    return segno.make(token, error="m", micro=False, boost_error=False)


def qr_png(token: str, *, scale: int = 8) -> bytes:
    buf = io.BytesIO()
    qr_code(token).save(buf, kind="png", scale=scale, border=QR_BORDER)
    return buf.getvalue()


def qr_svg(token: str, *, scale: int = 8) -> bytes:
    buf = io.BytesIO()
    qr_code(token).save(buf, kind="svg", scale=scale, border=QR_BORDER)
    return buf.getvalue()


@cache
def cjk_font() -> Path | None:
    """The first CJK font installed on this host, or None."""
    return next((p for p in CJK_FONT_CANDIDATES if p.is_file()), None)


@dataclass(frozen=True, slots=True)
class PaperTicket:
    """What goes on a paper ticket; `*_ascii` stand in for Chinese text when no CJK font is installed."""

    ticket_no: int
    token: str
    order_number: str
    site_name: str
    site_ascii: str
    product_name: str
    product_ascii: str
    kind: ProductKind
    visit_date: date
    valid_from: datetime
    valid_until: datetime
    timezone: str
    price_fen: int
    entries: int | None = None
    window_minutes: int | None = None
    holder_name: str | None = None


def _yuan(fen: int) -> str:
    return f"CNY {fen // 100}.{fen % 100:02d}"


def paper_pdf(t: PaperTicket, *, font: Path | None = None) -> bytes:
    """An 80 mm receipt-printer page: names, dates, QR, ticket and order numbers, price."""
    font = font if font is not None else cjk_font()
    pdf = FPDF(unit="mm", format=(80, 130))
    pdf.set_margins(5, 5, 5)
    pdf.set_auto_page_break(False)
    pdf.set_title(f"Ticket {t.ticket_no}")
    pdf.add_page()
    if font is not None:
        pdf.add_font("cjk", fname=str(font))
        family = "cjk"
    else:
        family = "helvetica"

    def text(value: str, ascii_value: str) -> str:
        return value if font is not None or value.isascii() else ascii_value

    def line(value: str, size: float, *, h: float = 6) -> None:
        pdf.set_font(family, size=size)
        pdf.multi_cell(0, h, value, align="C", new_x="LMARGIN", new_y="NEXT")

    tz = ZoneInfo(t.timezone)
    fmt = "%Y-%m-%d %H:%M"
    line(text(t.site_name, t.site_ascii), 13, h=7)
    line(text(t.product_name, t.product_ascii), 11)
    line(f"Visit date {t.visit_date.isoformat()}", 9, h=5)
    line(f"Valid {t.valid_from.astimezone(tz):{fmt}} - {t.valid_until.astimezone(tz):{fmt}}", 8, h=4)
    line(f"({t.timezone})", 7, h=4)
    if t.kind is ProductKind.TIME_WINDOW and t.window_minutes:
        line(f"{t.window_minutes} minutes from first entry", 8, h=4)
    if t.entries:
        line(f"{t.entries} entries", 8, h=4)
    if t.holder_name:
        line(text(t.holder_name, "(named holder)"), 9, h=5)
    size = 56.0
    pdf.image(io.BytesIO(qr_png(t.token, scale=6)), x=(80 - size) / 2, y=pdf.get_y() + 1, w=size, h=size)
    pdf.set_y(pdf.get_y() + size + 2)
    line(f"Ticket No. {t.ticket_no}", 10, h=5)
    line(f"Order {t.order_number}", 8, h=4)
    line(_yuan(t.price_fen), 10, h=5)
    return bytes(pdf.output())
