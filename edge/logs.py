"""The gate's log lines: text for a person at a terminal, or one JSON object per line for a log collector.

JSON (`log_format: json`): python-json-logger, each line an object with ``time`` (ISO 8601, UTC),
``level``, ``logger``, ``message``, and ``exc_info`` (the traceback) when there is one; fields given
with ``extra=`` are kept. The cloud has its own twin (`cloud.logs`): the layering forbids sharing.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def json_formatter() -> logging.Formatter:
    """One JSON object per record: time, level, logger, message (+ exc_info)."""
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
    )


def configure(level: str | int, log_format: Literal["text", "json"] = "text") -> None:
    """Send the process's log records to stderr at `level`, as text or JSON lines (replaces earlier handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
