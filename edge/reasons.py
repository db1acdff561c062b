"""The decision reasons: stable machine codes (`Reason`) and their sentences in zh-CN and en.

The codes travel in passage events and stay in journals, so a code's spelling never changes;
a new reason is a new member with both sentences (a test holds every member to that).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

Lang = Literal["zh", "en"]


class Reason(StrEnum):
    """Why a gate admitted or denied a presentation, or what else it journals."""

    OK = "ok"
    OK_EXIT = "ok_exit"
    EMERGENCY = "emergency"
    UNREADABLE = "unreadable"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_TICKET = "unknown_ticket"
    NOT_SYNCED_YET = "not_synced_yet"
    REVOKED = "revoked"
    BLOCKED = "blocked"
    WRONG_SITE = "wrong_site"
    WRONG_GATE = "wrong_gate"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    USED_UP = "used_up"
    DAILY_LIMIT = "daily_limit"
    PASSBACK = "passback"
    FIRE_ALARM_ON = "fire_alarm_on"
    FIRE_ALARM_OFF = "fire_alarm_off"
    STALE_FEED = "stale_feed"
    BARRIER_FAULT = "barrier_fault"


CATALOG: dict[Reason, dict[Lang, str]] = {
    Reason.OK: {"zh": "欢迎光临，请通行", "en": "Welcome, please pass"},
    Reason.OK_EXIT: {"zh": "再见，请通行", "en": "Goodbye, please pass"},
    Reason.EMERGENCY: {"zh": "紧急模式：闸机常开", "en": "Emergency mode: free passage"},
    Reason.UNREADABLE: {"zh": "无法识别的二维码", "en": "This code cannot be read"},
    Reason.BAD_SIGNATURE: {"zh": "票据校验失败，疑似伪造", "en": "Ticket signature is invalid"},
    Reason.UNKNOWN_KEY: {
        "zh": "票据密钥未知，请到售票处",
        "en": "Ticket key unknown here, please see the ticket office",
    },
    Reason.UNSUPPORTED_VERSION: {"zh": "票据版本不支持", "en": "Ticket format not supported"},
    Reason.UNKNOWN_TICKET: {"zh": "未找到该票，请到售票处", "en": "Ticket not found, please see the ticket office"},
    Reason.NOT_SYNCED_YET: {
        "zh": "尚未同步：请稍后再试或联系工作人员",
        "en": "Not synced yet: try again in a moment or see staff",
    },
    Reason.REVOKED: {"zh": "该票已退款或作废", "en": "This ticket was refunded or cancelled"},
    Reason.BLOCKED: {"zh": "该票已被冻结，请到服务台", "en": "This ticket is blocked, please see the service desk"},
    Reason.WRONG_SITE: {
        "zh": "该票不是本雪场的门票，请到售票处",
        "en": "This ticket is for another resort, please see the ticket office",
    },
    Reason.WRONG_GATE: {"zh": "该票不能在此闸机使用", "en": "This ticket is not valid at this gate"},
    Reason.NOT_YET_VALID: {"zh": "该票尚未生效", "en": "This ticket is not valid yet"},
    Reason.EXPIRED: {"zh": "该票已过期", "en": "This ticket has expired"},
    Reason.USED_UP: {"zh": "该票次数已用完", "en": "No entries left on this ticket"},
    Reason.DAILY_LIMIT: {"zh": "今日入场次数已达上限", "en": "Daily entry limit reached"},
    Reason.PASSBACK: {"zh": "刚刚已入场，请稍后再试", "en": "Entered moments ago; re-entry not yet allowed"},
    Reason.FIRE_ALARM_ON: {"zh": "火警：闸机已释放", "en": "Fire alarm: barrier released"},
    Reason.FIRE_ALARM_OFF: {"zh": "火警解除：闸机恢复正常", "en": "Fire alarm cleared: barrier back to normal"},
    Reason.STALE_FEED: {
        "zh": "票务数据未及时同步，请使用电子票或到售票处",
        "en": "Ticket data here is out of date: please use a signed ticket or see the ticket office",
    },
    Reason.BARRIER_FAULT: {"zh": "闸机故障，请联系工作人员", "en": "Gate fault, please ask staff"},
}

_UNKNOWN: dict[Lang, str] = {"zh": "未知原因（代码 {code}）", "en": "Unknown reason (code {code})"}


def reason(code: Reason | str, lang: Lang = "en") -> str:
    """The sentence for a code.

    A code this version does not know (a journal written by another version) reads "Unknown
    reason (code X)": a technician sees the code, and nobody takes it for a sentence.
    """
    try:
        known = Reason(code)
    except ValueError:
        return _UNKNOWN[lang].format(code=code)
    return CATALOG[known][lang]
