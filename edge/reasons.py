"""One catalog of decision reasons, keyed by stable machine codes, in zh-CN and en."""

from __future__ import annotations

from typing import Literal

Lang = Literal["zh", "en"]

CATALOG: dict[str, dict[Lang, str]] = {
    "ok": {"zh": "欢迎光临，请通行", "en": "Welcome, please pass"},
    "ok_exit": {"zh": "再见，请通行", "en": "Goodbye, please pass"},
    "emergency": {"zh": "紧急模式：闸机常开", "en": "Emergency mode: free passage"},
    "unreadable": {"zh": "无法识别的二维码", "en": "This code cannot be read"},
    "bad_signature": {"zh": "票据校验失败，疑似伪造", "en": "Ticket signature is invalid"},
    "unknown_key": {"zh": "票据密钥未知，请到售票处", "en": "Ticket key unknown here, please see the ticket office"},
    "unsupported_version": {"zh": "票据版本不支持", "en": "Ticket format not supported"},
    "unknown_ticket": {"zh": "未找到该票，请到售票处", "en": "Ticket not found, please see the ticket office"},
    "revoked": {"zh": "该票已退款或作废", "en": "This ticket was refunded or cancelled"},
    "blocked": {"zh": "该票已被冻结，请到服务台", "en": "This ticket is blocked, please see the service desk"},
    "wrong_site": {
        "zh": "该票不是本雪场的门票，请到售票处",
        "en": "This ticket is for another resort, please see the ticket office",
    },
    "wrong_gate": {"zh": "该票不能在此闸机使用", "en": "This ticket is not valid at this gate"},
    "not_yet_valid": {"zh": "该票尚未生效", "en": "This ticket is not valid yet"},
    "expired": {"zh": "该票已过期", "en": "This ticket has expired"},
    "used_up": {"zh": "该票次数已用完", "en": "No entries left on this ticket"},
    "daily_limit": {"zh": "今日入场次数已达上限", "en": "Daily entry limit reached"},
    "passback": {"zh": "刚刚已入场，请稍后再试", "en": "Entered moments ago; re-entry not yet allowed"},
    "fire_alarm_on": {"zh": "火警：闸机已释放", "en": "Fire alarm: barrier released"},
    "fire_alarm_off": {"zh": "火警解除：闸机恢复正常", "en": "Fire alarm cleared: barrier back to normal"},
    "stale_feed": {
        "zh": "票务数据未及时同步，请使用电子票或到售票处",
        "en": "Ticket data here is out of date: please use a signed ticket or see the ticket office",
    },
    "barrier_fault": {"zh": "闸机故障，请联系工作人员", "en": "Gate fault, please ask staff"},
}


def reason(code: str, lang: Lang = "en") -> str:
    """The sentence for a code; an unknown code falls back to the code itself."""
    entry = CATALOG.get(code)
    return entry[lang] if entry else code
