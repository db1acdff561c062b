"""The cloud's log lines as JSON for a log collector (`STARFISH_LOG_FORMAT=json`).

python-json-logger, one object per line with ``time`` (ISO 8601, UTC), ``level``, ``logger``,
``message`` and ``exc_info`` (the traceback) when there is one. `uvicorn_log_config` is handed to
uvicorn, which applies it in every worker process, so the app's own loggers (at INFO, for a
collector) and uvicorn's (at the level `serve` gives it) write the same lines. The gate has its own
twin (`edge.logs`): the layering forbids sharing. ``text`` keeps uvicorn's default logging.
"""

from __future__ import annotations

import logging
from typing import Any


def json_formatter() -> logging.Formatter:
    """One JSON object per record: time, level, logger, message (+ exc_info)."""
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
    )


def uvicorn_log_config() -> dict[str, Any]:
    """A `logging.config.dictConfig` for uvicorn: every record, the app's and uvicorn's, as a JSON line on stderr."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "cloud.logs.json_formatter"}},
        "handlers": {"json": handler},
        "root": {"handlers": ["json"], "level": "INFO"},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True},
        },
    }
