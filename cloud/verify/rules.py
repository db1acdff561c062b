"""Whether a ticket may be verified now: the gates' rules (`edge.decision`) a handheld applies, pure.

The codes and sentences are the gates' own (`edge.reasons`; the cloud does not import the edge, so
the few a handheld can give are repeated here and a test holds them equal). Rules, in the gates' order:
another site's ticket (``wrong_site``), refunded or revoked (``revoked``), blocked (``blocked``), before its validity
(``not_yet_valid``), after it or past a time window opened by its first entry (``expired``), and
every entry counted (``used_up``). A handheld has no barrier, so no passback or exit rules: a staff
member verifying twice in a row means to count twice (and may undo).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cloud.tickets.models import Ticket, TicketState

OK = "ok"

TEXTS: dict[str, tuple[str, str]] = {  # code -> (en, zh), as `edge.reasons.CATALOG` words them
    OK: ("Welcome, please pass", "欢迎光临，请通行"),
    "unreadable": ("This code cannot be read", "无法识别的二维码"),
    "bad_signature": ("Ticket signature is invalid", "票据校验失败，疑似伪造"),
    "unknown_key": ("Ticket key unknown here, please see the ticket office", "票据密钥未知，请到售票处"),
    "unsupported_version": ("Ticket format not supported", "票据版本不支持"),
    "unknown_ticket": ("Ticket not found, please see the ticket office", "未找到该票，请到售票处"),
    "revoked": ("This ticket was refunded or cancelled", "该票已退款或作废"),
    "blocked": ("This ticket is blocked, please see the service desk", "该票已被冻结，请到服务台"),
    "wrong_site": (
        "This ticket is for another resort, please see the ticket office",
        "该票不是本雪场的门票，请到售票处",
    ),
    "not_yet_valid": ("This ticket is not valid yet", "该票尚未生效"),
    "expired": ("This ticket has expired", "该票已过期"),
    "used_up": ("No entries left on this ticket", "该票次数已用完"),
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer for one ticket at one time: `ok`, or why not, in both languages."""

    code: str
    entries_left: int | None  # before this verification; None: unlimited

    @property
    def ok(self) -> bool:
        return self.code == OK

    @property
    def en(self) -> str:
        return TEXTS[self.code][0]

    @property
    def zh(self) -> str:
        return TEXTS[self.code][1]


def entries_left(ticket: Ticket) -> int | None:
    return None if ticket.entries is None else max(ticket.entries - ticket.entries_used, 0)


def judge(ticket: Ticket, site_id: int | None, at: datetime) -> Verdict:
    """May `ticket` be verified at `at` by a handheld of `site_id` (None: any site, for a look-up)?"""
    left = entries_left(ticket)
    if site_id is not None and ticket.site_id != site_id:
        return Verdict("wrong_site", left)
    if ticket.status in (TicketState.REFUNDED, TicketState.REVOKED):
        return Verdict("revoked", left)
    if ticket.status == TicketState.BLOCKED:
        return Verdict("blocked", left)
    if at < ticket.valid_from:
        return Verdict("not_yet_valid", left)
    if at >= ticket.valid_until:
        return Verdict("expired", left)
    if (
        ticket.window_minutes is not None
        and ticket.first_entry_at is not None
        and at >= ticket.first_entry_at + timedelta(minutes=ticket.window_minutes)
    ):
        return Verdict("expired", left)
    if left == 0:
        return Verdict("used_up", left)
    return Verdict(OK, left)


def refusal(code: str) -> Verdict:
    """A refusal before any ticket was found (an unreadable or forged code, an unknown one)."""
    return Verdict(code if code in TEXTS else "unreadable", None)
