"""The cloud's HTTP API as its callers spell it: one prefix, for the cloud, gates (snapshot) and tools."""

from __future__ import annotations

API_PREFIX = "/api/v1"


def snapshot_path(site: str) -> str:
    """Where a gate fetches its site's snapshot (HTTP Basic with its own credentials)."""
    return f"{API_PREFIX}/sync/sites/{site}/snapshot"
