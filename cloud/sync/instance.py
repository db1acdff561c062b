"""Who this cloud process is on the broker when several processes serve one database.

Every process consumes the gates' events through one MQTT v5 shared subscription, each with its own
persistent session. Its client id, and its login (brokers written by `starfish sync broker-config`
key the session by the login), must be its own and the same after a restart: a restarted process then
takes back the events the broker queued for it. An id made of host and pid would be new at every
restart and strand them, so the identity is configured, not guessed:

- ``STARFISH_CLOUD_INSTANCE`` names the host among several cloud hosts (``b``); unset on the first
  or only one. Two hosts with the same name take each other's sessions: the broker says "session
  taken over", logged as an error naming this setting.
- The worker processes of one host (``uvicorn --workers N`` in one unit) share their environment:
  each claims the lowest free worker number on this host with a lock file (`fcntl.flock`, released by
  the kernel when the process dies, so a restarted worker gets its number back).
- The suffix is ``-<instance>-<n>`` without the empty instance and without n = 0: the only process of
  the only host keeps ``starfish-cloud`` and the login ``cloud``; its workers 1..3 are ``cloud-1`` ..
  ``cloud-3``; host b's are ``cloud-b``, ``cloud-b-1``, ... (`logins`, for the broker's accounts).
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cloud.settings import Settings

MAX_WORKERS = 64


def suffix(instance: str, worker: int) -> str:
    """The part after the base client id and login: ``-b-2``, ``-1``, ``-b`` or nothing."""
    parts = [p for p in (instance, str(worker) if worker else "") if p]
    return "".join(f"-{p}" for p in parts)


def logins(username: str, instances: Iterable[str], workers: int) -> list[str]:
    """Every broker login of the cloud processes: `workers` per host, one host per instance name."""
    return [username + suffix(i, w) for i in instances for w in range(workers)]


@dataclass
class Identity:
    """This process's suffix, held for its life (the lock file stays open)."""

    suffix: str
    worker: int
    _fd: int | None = None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def claim(instance: str, *, run_dir: str, scope: str) -> Identity:
    """Claim the lowest free worker number of `instance` on this host among processes of the same `scope`
    (the broker and base client id: processes speaking to other brokers never compete)."""
    folder = Path(run_dir or os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or _tmp())
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{scope}-{instance}")
    for worker in range(MAX_WORKERS):
        fd = os.open(folder / f"{stem}-{worker}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return Identity(suffix(instance, worker), worker, fd)
    raise RuntimeError(f"more than {MAX_WORKERS} cloud processes of instance {instance!r} on this host")


def _tmp() -> str:
    return os.path.join(tempfile.gettempdir(), f"starfish-cloud-{os.getuid()}")


def claim_for(settings: Settings) -> Identity:
    """This process's identity among those speaking to the same broker under the same base client id."""
    scope = f"{settings.mqtt_client_id}@{settings.mqtt_host}_{settings.mqtt_port}"
    return claim(settings.cloud_instance, run_dir=settings.cloud_run_dir, scope=scope)


def session_expiry_s(settings: Settings) -> int:
    """How long the broker keeps a process's session while it is away. SQLite: 7 days (the only consumer;
    the broker holds the gates' events until it is back). PostgreSQL: 5 minutes, enough for a restart or a
    deploy; a process that stays away longer loses its session, and with it the events queued for it, which
    the gates still hold and send again (`ack_timeout_s`) to the processes that are up."""
    if settings.mqtt_session_expiry_s is not None:
        return settings.mqtt_session_expiry_s
    return 7 * 24 * 3600 if settings.database_url.startswith("sqlite") else 300
