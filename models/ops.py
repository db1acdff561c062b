"""What a site's gates need to be run and looked after: technician accounts down the feed, health up in the status.

Technicians are the cloud's staff with the role ``gate_tech``. A gate keeps their login names and
argon2id password hashes (never a password) to let them into its technician page; the cloud sends the
whole list of active technicians again whenever one of them changes (`models.sync.Technicians`), and in
every snapshot's header, so a technician disabled in the cloud is locked out at every gate after its
next sync.

`GateHealth` is the part of a gate's technician page the cloud can use to tell, in one call, which
gates need a technician (`GET /api/v1/sites/{id}/gates/status`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from models.messages import Message

TECHNICIANS_MAX = 500  # gate technicians of a resort (its training papers list 16 staff in all)
USERNAME_PATTERN = r"^[A-Za-z0-9_.-]+$"  # as the cloud's staff accounts are named
ERROR_MAX = 200  # a device's last error, as a status carries it


class TechnicianAccount(Message):
    """A gate technician as the site's gates know them: a login name and the argon2id hash of the password."""

    username: str = Field(min_length=3, max_length=64, pattern=USERNAME_PATTERN)
    password_hash: str = Field(
        min_length=1, max_length=200, pattern=r"^\$argon2", description="argon2 PHC string, as the cloud stores it"
    )


DeviceState = Literal["ok", "error", "absent"]


class GateHealth(Message):
    """What a gate reports of its own health with its status (all optional for a gate that cannot tell)."""

    version: str = Field(default="", max_length=40, description="The gate software's version")
    uptime_s: int = Field(default=0, ge=0, description="Seconds since the daemon started")
    barrier: DeviceState = Field(default="ok", description="The relay board: answering, or its last request failed")
    barrier_error: str | None = Field(default=None, max_length=ERROR_MAX)
    keep_open: bool = Field(default=False, description="Held open (a technician's keep-open, or emergency_open)")
    fire_alarm: bool = Field(default=False, description="The fire-alarm input is on: free passage")
    camera: DeviceState = "absent"
    camera_error: str | None = Field(default=None, max_length=ERROR_MAX)
    scanner: DeviceState = "absent"
    scanner_error: str | None = Field(default=None, max_length=ERROR_MAX)
    oldest_unacked_s: int | None = Field(
        default=None, ge=0, description="Age of the oldest passage event the cloud has not confirmed"
    )
    disk_free_mb: int | None = Field(default=None, ge=0, description="Free space where the gate's store lives")
    tickets: int | None = Field(default=None, ge=0, description="Tickets in the gate's cache")
    faces: int | None = Field(default=None, ge=0, description="Face templates in the gallery (None: face off)")
    in_step: bool | None = Field(
        default=None, description="The gate's ticket set equals the cloud's at its last checksum (None: unknown)"
    )
