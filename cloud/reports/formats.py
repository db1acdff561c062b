"""A report's table and its three renderings: JSON, CSV (UTF-8 with a BOM, so Excel reads Chinese) and XLSX.

JSON keeps money as integer fen, as every other endpoint does. CSV and XLSX are for people: a column whose key
ends in `_fen` is shown in yuan (元, two decimals) under a Chinese header that says so; dates as ISO dates.
Text that a spreadsheet would read as a formula (starting with = + - @ tab or CR; product and staff names are
typed by staff) gets a leading single quote in CSV and XLSX, so it is shown, never run. An XLSX sheet is named
after the report's title without the characters Excel forbids in sheet names (\\ / * ? : [ ]), 31 at most.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from fastapi.responses import JSONResponse, Response


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: str  # the Chinese header

    @property
    def money(self) -> bool:
        return self.key.endswith("_fen")

    @property
    def header(self) -> str:
        return f"{self.title}(元)" if self.money else self.title


@dataclass(slots=True)
class Report:
    name: str
    title: str
    site_id: int
    first: date
    last: date
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "report": self.name,
            "title": self.title,
            "site_id": self.site_id,
            "from": self.first.isoformat(),
            "to": self.last.isoformat(),
            "note": self.note,
            "columns": [{"key": c.key, "title": c.header} for c in self.columns],
            "rows": [{c.key: _json(row.get(c.key)) for c in self.columns} for row in self.rows],
        }

    def cells(self) -> list[list[Any]]:
        """Header then rows, as people read them (yuan, ISO dates)."""
        out: list[list[Any]] = [[c.header for c in self.columns]]
        for row in self.rows:
            out.append([_cell(row.get(c.key), c.money) for c in self.columns])
        return out

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.site_id}_{self.first.isoformat()}_{self.last.isoformat()}"


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date | datetime) else value


def _cell(value: Any, money: bool) -> Any:
    if value is None:
        return ""
    if money:
        return (Decimal(int(value)) / 100).quantize(Decimal("0.01"))
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(FORMULA):
        return "'" + value  # names are typed by staff: a spreadsheet must show them, never run them
    return value


FORMULA = ("=", "+", "-", "@", "\t", "\r")
SHEET_TITLE_BAD = str.maketrans("", "", "\\/*?:[]")


def to_csv(report: Report) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerows(report.cells())
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def to_xlsx(report: Report) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook(write_only=True)
    ws = wb.create_sheet(report.title.translate(SHEET_TITLE_BAD)[:31])
    header, *rows = report.cells()
    ws.append([_styled(ws, h, Font(bold=True)) for h in header])
    money = [c.money for c in report.columns]
    for row in rows:
        ws.append([_money_cell(ws, v) if m and v != "" else v for v, m in zip(row, money, strict=True)])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _styled(ws: Any, value: Any, font: Any) -> Any:
    from openpyxl.cell import WriteOnlyCell

    cell = WriteOnlyCell(ws, value=value)
    cell.font = font
    return cell


def _money_cell(ws: Any, value: Decimal) -> Any:
    from openpyxl.cell import WriteOnlyCell

    cell = WriteOnlyCell(ws, value=float(value))
    cell.number_format = "0.00"
    return cell


MEDIA = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def render(report: Report, fmt: str) -> Response:
    """The report as the response `fmt` (json | csv | xlsx) asks for; files come as attachments."""
    if fmt == "json":
        return JSONResponse(report.as_json())
    body = to_csv(report) if fmt == "csv" else to_xlsx(report)
    disposition = f'attachment; filename="{report.filename}.{fmt}"'
    return Response(body, media_type=MEDIA[fmt], headers={"Content-Disposition": disposition})
