"""Charts people look at: entries per hour of a day against the same weekday a week before, and sales per channel.

matplotlib (its Agg canvas, no display) is imported inside the functions, so `cloud serve` does not load it at start-up;
labels are Chinese, drawn with WenQuanYi Micro Hei (fonts-wqy-microhei). SVG keeps text as text (searchable,
selectable) rather than paths.
"""

from __future__ import annotations

import contextlib
import io
from datetime import date, timedelta
from typing import Any

from sqlalchemy.orm import Session

from cloud.reports.entries import entries_by_hour
from cloud.reports.money import CHANNELS, sales_by_channel
from cloud.reports.period import Period, period

FONT = "WenQuanYi Micro Hei"
FONT_FILE = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
SIZE_IN, DPI = (10.0, 5.0), 100  # a 1000 x 500 PNG


def _figure() -> Any:
    """A new figure on the Agg canvas; no pyplot, so no global figure registry shared between request threads."""
    import matplotlib
    from matplotlib import font_manager
    from matplotlib.figure import Figure

    if FONT not in {f.name for f in font_manager.fontManager.ttflist}:
        with contextlib.suppress(OSError):  # not installed: Chinese labels come out as boxes
            font_manager.fontManager.addfont(FONT_FILE)
    matplotlib.rcParams.update(
        {
            "font.family": "sans-serif",
            "font.sans-serif": [FONT, "DejaVu Sans"],
            "axes.unicode_minus": False,
            "svg.fonttype": "none",
        }
    )
    return Figure(figsize=SIZE_IN, dpi=DPI)


def _save(fig: Any, fmt: str) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format=fmt, dpi=DPI)
    return out.getvalue()


def entries_hourly(session: Session, site_id: int, day: date, fmt: str) -> bytes:
    """Entries per hour on `day` (bars) and on the same weekday a week before (a line)."""
    this = entries_by_hour(session, period(session, site_id, day))
    before_day = day - timedelta(days=7)
    before = entries_by_hour(session, period(session, site_id, before_day))
    fig = _figure()
    ax = fig.subplots()
    hours = list(range(24))
    ax.bar(hours, [this.get(h, 0) for h in hours], color="#2b7bba", label=f"{day:%m月%d日} 入园人次")
    ax.plot(
        hours, [before.get(h, 0) for h in hours], color="#e4572e", marker="o", label=f"上周同日 {before_day:%m月%d日}"
    )
    ax.set_xticks(hours)
    ax.set_xlabel("时段（点）")
    ax.set_ylabel("入园人次")
    ax.set_title(f"每小时入园人次：{day:%Y年%m月%d日} 对比上周同日")
    ax.legend()
    fig.tight_layout()
    return _save(fig, fmt)


def sales_channels(session: Session, p: Period, fmt: str) -> bytes:
    """Money taken per channel over the period, in yuan."""
    figures = sales_by_channel(session, p)
    fig = _figure()
    ax = fig.subplots()
    names = [CHANNELS.get(k, k) for k, _ in figures]
    yuan = [fen / 100 for _, fen in figures]
    bars = ax.bar(names, yuan, color="#2b7bba")
    ax.bar_label(bars, labels=[f"¥{v:,.2f}" for v in yuan])
    ax.set_ylabel("销售额（元）")
    span = f"{p.first:%Y-%m-%d}" if p.first == p.last else f"{p.first:%Y-%m-%d} 至 {p.last:%Y-%m-%d}"
    ax.set_title(f"各渠道销售额 {span}")
    if not figures:
        ax.text(0.5, 0.5, "无销售", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return _save(fig, fmt)
