"""A site snapshot over HTTP (streamed NDJSON) into a staging file: blocking, for a worker thread.

Lines: one `SnapshotHeader`, then `header.tickets` `Ticket` lines, then `SnapshotStatus`
lines. Nothing is trusted until the staged set's checksum equals the header's.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
from pydantic import ValidationError

from edge.store_sync import SnapshotError, SnapshotStaging
from models import Ticket
from models.sync import SnapshotHeader, SnapshotStatus


def snapshot_url(base: str, site: str) -> str:
    return f"{base.rstrip('/')}/api/v1/sync/sites/{site}/snapshot"


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])


def fetch_snapshot(
    *,
    url: str,
    site: str,
    staging: Path,
    auth: tuple[str, str] | None,
    ca_file: Path | None = None,
    timeout_s: float = 60.0,
    abort: threading.Event | None = None,
) -> SnapshotHeader:
    """Download a snapshot into `staging` (a new SQLite file) and verify it; returns its header."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
    try:
        with (
            httpx.Client(auth=auth, verify=verify, timeout=timeout) as client,
            client.stream("GET", url, headers={"Accept": "application/x-ndjson"}) as resp,
        ):
            if resp.status_code != 200:
                raise SnapshotError(f"GET {url}: HTTP {resp.status_code}")
            return _stage(resp.iter_lines(), site=site, staging=staging, abort=abort)
    except httpx.HTTPError as exc:
        raise SnapshotError(f"GET {url}: {exc}") from exc


def _stage(lines: Iterator[str], *, site: str, staging: Path, abort: threading.Event | None) -> SnapshotHeader:
    it = iter(lines)
    first = next((line for line in it if line.strip()), None)
    if first is None:
        raise SnapshotError("empty snapshot")
    try:
        header = SnapshotHeader.model_validate_json(first)
    except ValidationError as exc:
        raise SnapshotError(f"snapshot header: {_first_error(exc)}") from exc
    if header.site != site:
        raise SnapshotError(f"snapshot is for site {header.site!r}, not {site!r}")
    stage = SnapshotStaging(staging)
    try:
        number = 1
        for line in it:
            number += 1
            if not line.strip():
                continue
            if abort is not None and abort.is_set():
                raise SnapshotError("snapshot download aborted")
            try:
                if stage.tickets < header.tickets:
                    stage.add_ticket(Ticket.model_validate_json(line), line)
                else:
                    stage.add_status(SnapshotStatus.model_validate_json(line))
            except ValidationError as exc:
                raise SnapshotError(f"snapshot line {number}: {_first_error(exc)}") from exc
        checksum = stage.finish()
    finally:
        stage.close()
    if stage.tickets != header.tickets:
        raise SnapshotError(f"snapshot announced {header.tickets} tickets but held {stage.tickets}")
    if checksum != header.checksum:
        raise SnapshotError(f"snapshot checksum {checksum} does not match its header's {header.checksum}")
    return header
