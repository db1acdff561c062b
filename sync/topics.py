"""Topic names: one place, so ACLs, gates and the cloud cannot disagree."""

from __future__ import annotations

import re

ROOT = "sf"
_CODE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


def _check(code: str) -> str:
    if not _CODE.fullmatch(code):
        raise ValueError(f"{code!r} is not a site or gate code (lowercase letters, digits, '-')")
    return code


def feed(site: str) -> str:
    return f"{ROOT}/{_check(site)}/feed"


def head(site: str) -> str:
    """The feed's head (retained, refreshed by the cloud): how far the feed goes, and that the link lives."""
    return f"{ROOT}/{_check(site)}/head"


def events(site: str, gate: str) -> str:
    return f"{ROOT}/{_check(site)}/gate/{_check(gate)}/events"


def acks(site: str, gate: str) -> str:
    return f"{ROOT}/{_check(site)}/gate/{_check(gate)}/acks"


def status(site: str, gate: str) -> str:
    return f"{ROOT}/{_check(site)}/gate/{_check(gate)}/status"


def all_events(site: str) -> str:
    return f"{ROOT}/{_check(site)}/gate/+/events"


def all_status(site: str) -> str:
    return f"{ROOT}/{_check(site)}/gate/+/status"


def all_acks(site: str) -> str:
    return f"{ROOT}/{_check(site)}/gate/+/acks"


# What the cloud reads: every gate's events and status, of every site.
ANY_SITE_EVENTS = f"{ROOT}/+/gate/+/events"
ANY_SITE_STATUS = f"{ROOT}/+/gate/+/status"


def parse_gate_topic(topic: str) -> tuple[str, str, str] | None:
    """(site, gate, leaf) of a per-gate topic, or None when it is not one."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != ROOT or parts[2] != "gate":
        return None
    site, gate, leaf = parts[1], parts[3], parts[4]
    if not (_CODE.fullmatch(site) and _CODE.fullmatch(gate)) or leaf not in ("events", "acks", "status"):
        return None
    return site, gate, leaf


def bridge_clientid(site: str) -> str:
    """The site broker's bridge to the cloud: its client id on the cloud broker (and, with ``-local``, at home)."""
    return f"bridge-{_check(site)}"


def bridge_state(site: str) -> str:
    """Where Mosquitto publishes the bridge's state, 1 (up) / 0 (down), retained, on both brokers."""
    return f"$SYS/broker/connection/{bridge_clientid(site)}/state"
