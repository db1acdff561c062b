"""A gate's rules set from the cloud: allowed kinds and products, rescan, passback, daily limit, keep-open.

Each gate's YAML file sets its rules at first and stays the fallback; rules the cloud holds for the gate
win over the file's, as one whole set (a field left out of a PUT takes the gate's default, never the
file's). Setting them (PUT) or withdrawing them (DELETE: the gate goes back to its file) appends a
`GateConfigChange` to the gate's site feed in the same transaction, audited; every gate of the site
receives it, only that gate takes it, live, without a restart. A snapshot carries the asking gate's
rules (`SnapshotHeader.gate_config`), so a gate that resyncs, or starts empty, runs by them too.

The wire config names the gate, its site, direction and time zone as the cloud knows them; a gate keeps
its own file's direction and time zone (its installation) and takes the rules. A keep-open set in the
cloud holds the barrier open at that gate; a keep-open from the gate's file or its technician is not
undone by the cloud. The response's `feed_seq` is the feed change that carried the rules (or their
withdrawal): a gate whose status reports that sequence or later runs by them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from cloud.audit.service import record
from cloud.db import utcnow
from cloud.deps import MAX_ID, Principal
from cloud.errors import DomainError, NotFound
from cloud.products.models import Product
from cloud.sites.models import Gate, GateRules, Site
from cloud.sites.service import get_gate
from cloud.sync.feed import append_change, lock_feed
from models import Direction, GateConfig, ProductKind
from models.messages import PRODUCTS_MAX
from models.sync import GateConfigChange


class GateRulesIn(BaseModel):
    """A gate's rules as the cloud sets them (the whole set: what is left out takes the gate's default)."""

    model_config = ConfigDict(extra="forbid")

    allowed_kinds: list[ProductKind] = Field(
        default_factory=lambda: list(ProductKind), min_length=1, max_length=len(ProductKind),
        description="Product kinds this gate admits",
    )  # fmt: skip
    allowed_products: list[int] | None = Field(
        default=None, max_length=PRODUCTS_MAX, description="If set, only these products (ids of the gate's site)"
    )
    rescan_seconds: float = Field(
        default=3.0, ge=0, le=3600, description="The same code at this reader within this time repeats the answer"
    )
    passback_seconds: float = Field(
        default=300.0, ge=0, le=86400, description="Minimum time between two entries on one ticket (anti-passback)"
    )
    daily_limit: int | None = Field(default=None, ge=1, le=1000, description="Entries per ticket per day at this gate")
    emergency_open: bool = Field(default=False, description="Keep-open: the barrier held open, nothing counted")


class GateRulesOut(BaseModel):
    gate_id: int
    source: Literal["cloud", "local"] = Field(description="cloud: these rules; local: the gate's own file's")
    rules: GateRulesIn | None
    updated_by: str | None = None
    updated_at: datetime | None = None
    feed_seq: int | None = Field(
        default=None, description="The feed change that carried them (or their withdrawal); None: never set"
    )


def _out(gate: Gate, row: GateRules | None) -> GateRulesOut:
    if row is None:
        return GateRulesOut(gate_id=gate.id, source="local", rules=None)
    return GateRulesOut(
        gate_id=gate.id,
        source="cloud",
        rules=_rules(row),
        updated_by=row.updated_by,
        updated_at=row.updated_at,
        feed_seq=row.feed_seq,
    )


def _rules(row: GateRules) -> GateRulesIn:
    return GateRulesIn(
        allowed_kinds=[ProductKind(k) for k in row.allowed_kinds],
        allowed_products=row.allowed_products,
        rescan_seconds=row.rescan_seconds,
        passback_seconds=row.passback_seconds,
        daily_limit=row.daily_limit,
        emergency_open=row.emergency_open,
    )


def wire_config(gate: Gate, site: Site, rules: GateRulesIn) -> GateConfig:
    """The full config a gate receives: its identity as the cloud knows it, and the rules."""
    products = rules.allowed_products
    return GateConfig(
        gate_id=gate.code,
        site_id=site.code,
        direction=Direction(gate.direction),
        timezone=site.timezone,
        allowed_kinds=frozenset(rules.allowed_kinds),
        allowed_products=None if products is None else frozenset(str(p) for p in products),
        rescan_seconds=rules.rescan_seconds,
        passback_seconds=rules.passback_seconds,
        daily_limit=rules.daily_limit,
        emergency_open=rules.emergency_open,
    )


def gate_config(session: Session, gate: Gate) -> GateConfig | None:
    """The gate's cloud rules as the wire carries them (a snapshot's header); None: the gate's file rules."""
    row = session.get(GateRules, gate.id)
    site = session.get(Site, gate.site_id)
    return None if row is None or site is None else wire_config(gate, site, _rules(row))


def get(session: Session, gate_id: int) -> GateRulesOut:
    gate = get_gate(session, gate_id)
    return _out(gate, session.get(GateRules, gate.id))


def _check_products(session: Session, gate: Gate, products: list[int] | None) -> None:
    if not products:
        return
    wanted = {p for p in products if 1 <= p <= MAX_ID}
    found = set(session.scalars(select(Product.id).where(Product.site_id == gate.site_id, Product.id.in_(wanted))))
    unknown = sorted(set(products) - found)
    if unknown:
        raise DomainError(
            "unknown_products",
            f"Products {unknown} are not products of this gate's site",
            f"商品 {unknown} 不属于该闸机所在场地",
            status_code=422,
            product_ids=unknown,
        )


def put(
    session: Session, actor: Principal, gate_id: int, rules: GateRulesIn, *, now: datetime | None = None
) -> GateRulesOut:
    """Set the gate's rules from the cloud: stored, audited and on its site's feed; committed."""
    now = now or utcnow()
    gate = get_gate(session, gate_id)
    site = session.get(Site, gate.site_id)
    assert site is not None
    if rules.allowed_products is not None:
        rules = rules.model_copy(update={"allowed_products": sorted(set(rules.allowed_products))})
    _check_products(session, gate, rules.allowed_products)
    lock_feed(session, gate.site_id)  # rule changes of one site take turns: the feed's order is the rows'
    change = append_change(
        session, gate.site_id, GateConfigChange(gate_id=gate.code, config=wire_config(gate, site, rules)), now=now
    )
    row = session.get(GateRules, gate.id) or GateRules(gate_id=gate.id)
    row.allowed_kinds = sorted(k.value for k in rules.allowed_kinds)
    row.allowed_products = rules.allowed_products
    row.rescan_seconds, row.passback_seconds = rules.rescan_seconds, rules.passback_seconds
    row.daily_limit, row.emergency_open = rules.daily_limit, rules.emergency_open
    row.updated_by, row.updated_at, row.feed_seq = actor.actor[:100], now, change.seq
    session.add(row)
    detail = {"gate": gate.code, "rules": rules.model_dump(mode="json"), "feed_seq": change.seq}
    record(session, actor, "gate.rules_set", "gate", gate.id, detail)
    session.commit()
    return _out(gate, row)


def delete(session: Session, actor: Principal, gate_id: int, *, now: datetime | None = None) -> GateRulesOut:
    """Withdraw the gate's cloud rules: it goes back to its file's; audited, on the feed, committed."""
    now = now or utcnow()
    gate = get_gate(session, gate_id)
    lock_feed(session, gate.site_id)
    row = session.get(GateRules, gate.id)
    if row is None:
        raise NotFound(
            "gate_rules_not_found",
            f"Gate {gate_id} runs by its own file's rules: the cloud holds none",
            f"闸机 {gate_id} 使用本地配置文件的规则，云端未设置规则",
        )
    change = append_change(session, gate.site_id, GateConfigChange(gate_id=gate.code, config=None), now=now)
    session.delete(row)
    record(session, actor, "gate.rules_withdrawn", "gate", gate.id, {"gate": gate.code, "feed_seq": change.seq})
    session.commit()
    return GateRulesOut(
        gate_id=gate.id, source="local", rules=None, updated_by=actor.actor[:100], updated_at=now, feed_seq=change.seq
    )
