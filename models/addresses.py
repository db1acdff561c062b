"""Which hosts are this machine: where a login may travel without TLS."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Is `host` this machine (127.0.0.0/8, ::1 or localhost)? Names other than localhost are not resolved."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
