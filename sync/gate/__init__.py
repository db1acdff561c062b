"""The gate side of sync: `GateSync`, which reaches its gate only through a `GatePort`."""

from sync.gate.client import GateSync
from sync.gate.port import GatePort

__all__ = ["GatePort", "GateSync"]
