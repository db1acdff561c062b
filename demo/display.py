"""What the demo shows: the live table (`render`), its plain-text lines when stdout is no terminal, and the
summary at the end with the exactly-once verdict.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from demo.skiers import Seen, Skiers
from edge.reasons import reason
from harness.resort_views import CloudView, Decision, ExactlyOnce, GateView


@dataclass(frozen=True)
class Snapshot:
    t: float
    link_up: bool
    link_since: float
    gates: list[GateView]
    cloud: CloudView


def _age(report: dict[str, object]) -> str:
    seen = report.get("last_seen")
    if not isinstance(seen, str):
        return "never"
    at = datetime.fromisoformat(seen)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return f"{(datetime.now(UTC) - at).total_seconds():.0f} s ago"


def _decision_text(d: Decision | None) -> Text:
    if d is None:
        return Text("no decision", style="yellow")
    style = "green" if d.admit else "red"
    return Text(f"{'ADMIT' if d.admit else 'DENY'} {d.code}", style=style) + Text(f"  {reason(d.code, 'zh')}")


def render(s: Snapshot, skiers: Skiers, duration: float, footer: str) -> Group:
    """The live view: one row per gate, the cloud's side, the latest decisions."""
    link = (
        Text("UP", style="bold green") if s.link_up else Text(f"CUT for {s.t - s.link_since:.0f} s", style="bold red")
    )
    title = Text(f"Starfish resort · {s.t:3.0f} s of {duration:.0f} · cloud link ") + link
    gates = Table(title=title, title_justify="left", expand=False)
    for name, justify in (
        ("gate", "left"),
        ("admitted", "right"),
        ("denied", "right"),
        ("from peers", "right"),
        ("outbox", "right"),
        ("feed seq", "right"),
        ("stored in cloud", "right"),
        ("cloud last heard", "left"),
        ("last decision", "left"),
    ):
        gates.add_column(name, justify=justify)  # type: ignore[arg-type]
    for g in s.gates:
        report = s.cloud.gates.get(g.gate, {})
        gates.add_row(
            g.gate if g.running else f"{g.gate} (stopped)",
            str(g.admitted),
            str(g.denied),
            str(g.from_peers),
            Text(str(g.outbox), style="bold yellow" if g.outbox else ""),
            str(g.feed_seq),
            str(s.cloud.stored.get(g.gate, 0)),
            f"{report.get('state', '?')}, {_age(report)}" if report else "?",
            _decision_text(g.last),
        )
    head = "?" if s.cloud.feed_head is None else str(s.cloud.feed_head)
    cloud = Text(
        f"cloud: feed head {head} · {sum(s.cloud.stored.values())} passages stored · "
        f"{skiers.sold} tickets sold, {skiers.refunded} refunded"
        + (f" · {skiers.sale_errors} sales failed" if skiers.sale_errors else "")
    )
    recent = Table(box=None, show_header=False, padding=(0, 1))
    for seen in skiers.recent(8):
        mark = Text("  ") if seen.as_expected else Text("? ", style="yellow")
        recent.add_row(f"{seen.t:5.1f}s", seen.visit.gate, seen.visit.who, mark + _decision_text(seen.decision))
    return Group(gates, cloud, Text(""), recent, Text(footer, style="dim"))


def plain_status(s: Snapshot) -> str:
    gates = " | ".join(
        f"{g.gate} admitted {g.admitted} denied {g.denied} outbox {g.outbox} seq {g.feed_seq} "
        f"cloud {s.cloud.stored.get(g.gate, 0)}"
        for g in s.gates
    )
    head = "?" if s.cloud.feed_head is None else s.cloud.feed_head
    return f"{s.t:5.1f}s link {'up' if s.link_up else 'CUT'} | {gates} | cloud feed head {head}"


def plain_seen(seen: Seen) -> str:
    d = seen.decision
    got = "no decision" if d is None else f"{'ADMIT' if d.admit else 'DENY '} {d.code:<14} {reason(d.code)}"
    return f"{seen.t:5.1f}s {seen.visit.gate:<8} {seen.visit.who:<30} {got}{'' if seen.as_expected else '  (?)'}"


def summary(
    console: Console,
    skiers: Skiers,
    views: list[GateView],
    check: ExactlyOnce,
    events: list[str],
    drained: bool,
    drain_s: float,
) -> int:
    seen = skiers.all_seen()
    table = Table(title="Summary", title_justify="left")
    for name in ("gate", "journaled", "admitted", "denied", "from peers", "stored in cloud", "outbox"):
        table.add_column(name, justify="left" if name == "gate" else "right")
    for v in views:
        table.add_row(
            v.gate,
            str(v.journaled),
            str(v.admitted),
            str(v.denied),
            str(v.from_peers),
            str(check.stored.get(v.gate, 0)),
            str(v.outbox),
        )
    console.print(table)
    codes = Counter(s.decision.code if s.decision else "no decision" for s in seen)
    console.print("decisions: " + ", ".join(f"{code} {n}" for code, n in codes.most_common()))
    surprises = [s for s in seen if not s.as_expected]
    line = f"{len(seen) - len(surprises)} of {len(seen)} visits decided as the script expected"
    if surprises:
        line += "; not: " + "; ".join(plain_seen(s).strip() for s in surprises[:5])
    console.print(line)
    console.print(
        f"{skiers.sold} tickets sold, {skiers.refunded} refunded"
        + (f", {skiers.sale_errors} sales failed" if skiers.sale_errors else ""),
    )
    for event in events:
        console.print(event.strip())
    console.print(f"outboxes {'drained' if drained else 'NOT drained'} {drain_s:.1f} s after the skiers stopped")
    console.print(check.line(), style="bold green" if check.ok else "bold red")
    return 0 if check.ok and seen else 1
