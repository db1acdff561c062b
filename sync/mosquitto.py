"""Mosquitto brokers from the cloud's site/gate registry: config, password file, ACL, and a runner.

Two roles. A *site* broker serves one site's gates; with a `BridgeTo` it bridges that site's
topics to the cloud broker, without one it also takes the cloud account (one broker for all).
A *cloud* broker serves the cloud account and, per site, the site's bridge account (bridged
sites) or the site's gates themselves (sites without a site broker).

Plain dataclasses in, files out: no database and no process here (`harness.mosquitto` runs a
broker from these files for tests, the demo and the benchmark).

The client id is the login (``use_username_as_clientid`` on every listener): whatever client id a
client presents, the broker keys its session by its username, so a login can take over only its
own session, never another gate's, the cloud's or the bridge's. Hence one client per login (a
registry sharing one between two parties is refused), and persistent sessions are the login's: a
gate's ``gate-<site>-<gate>`` and the cloud's ``starfish-cloud`` (STARFISH_MQTT_CLIENT_ID) are
ignored by the broker, the gate's session lives under its gate login and the cloud's under its cloud
login. The bridge's ``remote_clientid`` likewise becomes its login on the cloud broker; its state
topic keeps the configured ``bridge-<site>``, which the bridge itself names. A broker upgraded to
this config has no session under the new ids: the gates fetch a snapshot, unconfirmed events are
published again, as after any lost session.

Message size: ``max_packet_size`` (MAX_PACKET_BYTES: the readers' MAX_MESSAGE_BYTES, 1 MiB, plus
room for the MQTT header, topic and properties). The largest legitimate message is an EventBatch
of EVENT_BATCH_MAX events, about 240 KB with the longest ASCII ids and 575 KB if every id were
4-byte UTF-8; a client sending a larger packet is disconnected by the broker.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from models.sync import MAX_MESSAGE_BYTES
from sync import topics
from sync.mosquitto_passwd import DEFAULT_ITERATIONS, check_username, passwd_line

Role = Literal["site", "cloud"]
# A whole MQTT packet: the largest payload the readers take, plus the fixed header, the topic and
# the v5 properties (a few hundred bytes; 16 KiB of room).
MAX_PACKET_BYTES = MAX_MESSAGE_BYTES + 16 * 1024
# The client id is the login: whoever presents another's client id takes over only their own session.
_LISTENER_SETTINGS = ("use_username_as_clientid true",)


@dataclass(frozen=True)
class GateAccount:
    gate: str
    username: str
    password: str


@dataclass(frozen=True)
class BridgeTo:
    """The site broker's link to the cloud broker; the cloud broker gets a matching account."""

    address: str
    port: int
    username: str
    password: str
    cafile: Path | None = None
    restart_timeout: tuple[int, int] = (1, 5)
    keepalive: int = 15


@dataclass(frozen=True)
class SiteRegistry:
    site: str
    gates: list[GateAccount]
    cloud_username: str
    cloud_password: str
    bridge: BridgeTo | None = None
    # More cloud processes' logins (`cloud.sync.instance`): the cloud's password and ACL, one session each.
    cloud_logins: tuple[str, ...] = ()


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA that signed the server certificate, the certificate, its key."""

    cafile: Path
    certfile: Path
    keyfile: Path


@dataclass(frozen=True)
class TlsListener:
    """A TLS listener; `host` None: the plain listener's host."""

    port: int
    files: TlsFiles
    host: str | None = None


@dataclass(frozen=True)
class BrokerOptions:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: TlsListener | None = None
    max_queued_messages: int = 100_000
    max_inflight_messages: int = 100
    max_packet_size: int | None = MAX_PACKET_BYTES  # None: no limit (only to test what the clients do)
    autosave_interval: int = 60
    run_as_user: str | None = None
    password_iterations: int = DEFAULT_ITERATIONS


@dataclass(frozen=True)
class Account:
    """One broker login and the topics it may read (subscribe/receive) and write (publish)."""

    username: str
    password: str
    read: tuple[str, ...]
    write: tuple[str, ...]


@dataclass(frozen=True)
class BrokerFiles:
    conf: Path
    passwd: Path
    acl: Path
    data_dir: Path


def _gate_account(site: str, gate: GateAccount) -> Account:
    return Account(
        username=gate.username,
        password=gate.password,
        # Gates read each other's events and status so they agree while the cloud is away.
        read=(
            topics.feed(site),
            topics.head(site),
            topics.all_events(site),
            topics.all_status(site),
            topics.acks(site, gate.gate),
        ),
        write=(topics.events(site, gate.gate), topics.status(site, gate.gate)),
    )


def _cloud_accounts(reg: SiteRegistry, *, with_bridge_state: bool) -> list[Account]:
    # The head too: the cloud taking over the feed reads the retained one (a restored backup is behind it).
    read = [topics.all_events(reg.site), topics.all_status(reg.site), topics.head(reg.site)]
    if with_bridge_state:
        read.append(topics.bridge_state(reg.site))
    return [
        Account(
            username=username,
            password=reg.cloud_password,
            read=tuple(read),
            write=(topics.feed(reg.site), topics.head(reg.site), *(topics.acks(reg.site, g.gate) for g in reg.gates)),
        )
        for username in dict.fromkeys((reg.cloud_username, *reg.cloud_logins))
    ]


def _bridge_account(reg: SiteRegistry, bridge: BridgeTo) -> Account:
    return Account(
        username=bridge.username,
        password=bridge.password,
        read=(topics.feed(reg.site), topics.head(reg.site), *(topics.acks(reg.site, g.gate) for g in reg.gates)),
        write=(topics.all_events(reg.site), topics.all_status(reg.site), topics.bridge_state(reg.site)),
    )


def _merge(accounts: list[Account]) -> list[Account]:
    """One entry per username; the same username twice must carry the same password."""
    merged: dict[str, Account] = {}
    for acc in accounts:
        check_username(acc.username)
        seen = merged.get(acc.username)
        if seen is None:
            merged[acc.username] = acc
            continue
        if seen.password != acc.password:
            raise ValueError(f"username {acc.username!r} appears twice with different passwords")
        merged[acc.username] = replace(
            seen,
            read=tuple(dict.fromkeys(seen.read + acc.read)),
            write=tuple(dict.fromkeys(seen.write + acc.write)),
        )
    return list(merged.values())


def _as_list(sites: SiteRegistry | Sequence[SiteRegistry]) -> list[SiteRegistry]:
    regs = [sites] if isinstance(sites, SiteRegistry) else list(sites)
    codes = [r.site for r in regs]
    if len(set(codes)) != len(codes):
        raise ValueError(f"a site appears twice: {codes}")
    for reg in regs:
        gates = [g.gate for g in reg.gates]
        if len(set(gates)) != len(gates):
            raise ValueError(f"site {reg.site!r} lists a gate twice: {gates}")
    _one_client_per_login(regs)
    return regs


def _one_client_per_login(regs: list[SiteRegistry]) -> None:
    """Each login is one client's: its client id is the login, so two clients sharing one would take turns."""
    owners: dict[str, str] = {}
    for reg in regs:
        logins = [(u, "the cloud") for u in (reg.cloud_username, *reg.cloud_logins)]  # each serves every site
        logins += [(g.username, f"gate {reg.site}/{g.gate}") for g in reg.gates]
        if reg.bridge is not None:
            logins.append((reg.bridge.username, f"the bridge of {reg.site}"))
        for username, owner in logins:
            if owners.setdefault(username, owner) != owner:
                raise ValueError(f"login {username!r} is both {owners[username]}'s and {owner}'s: one client per login")


def broker_accounts(sites: SiteRegistry | Sequence[SiteRegistry], role: Role) -> list[Account]:
    """Every login the broker of this role accepts, with its ACL."""
    regs = _as_list(sites)
    accounts: list[Account] = []
    if role == "site":
        if len(regs) != 1:
            raise ValueError("a site broker serves exactly one site")
        reg = regs[0]
        accounts += [_gate_account(reg.site, g) for g in reg.gates]
        if reg.bridge is None:
            accounts += _cloud_accounts(reg, with_bridge_state=False)
    else:
        for reg in regs:
            accounts += _cloud_accounts(reg, with_bridge_state=reg.bridge is not None)
            if reg.bridge is None:
                accounts += [_gate_account(reg.site, g) for g in reg.gates]
            else:
                accounts.append(_bridge_account(reg, reg.bridge))
    return _merge(accounts)


def render_acl(accounts: Sequence[Account]) -> str:
    lines = ["# Generated by starfish from the site/gate registry: regenerate, do not edit.", ""]
    for acc in accounts:
        lines.append(f"user {acc.username}")
        lines += [f"topic read {t}" for t in acc.read]
        lines += [f"topic write {t}" for t in acc.write]
        lines.append("")
    return "\n".join(lines)


def render_passwd(accounts: Sequence[Account], *, iterations: int = DEFAULT_ITERATIONS) -> str:
    return "".join(passwd_line(a.username, a.password, iterations=iterations) + "\n" for a in accounts)


def _conf_value(value: str, what: str) -> str:
    """A value mosquitto.conf keeps verbatim: no spaces at the ends, no control characters."""
    if not value or value != value.strip() or any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise ValueError(f"{what} cannot be written into mosquitto.conf: {value!r}")
    return value


def _bridge_section(reg: SiteRegistry, bridge: BridgeTo) -> list[str]:
    base, cap = bridge.restart_timeout
    lines = [
        f"connection cloud-{reg.site}",
        f"address {_conf_value(bridge.address, 'bridge address')}:{bridge.port}",
        "bridge_protocol_version mqttv311",
        "try_private true",
        "cleansession false",
        f"remote_clientid {topics.bridge_clientid(reg.site)}",
        f"local_clientid {topics.bridge_clientid(reg.site)}-local",
        f"remote_username {check_username(bridge.username)}",
        f"remote_password {_conf_value(bridge.password, 'bridge password')}",
        "start_type automatic",
        f"restart_timeout {base} {cap}",
        f"keepalive_interval {max(5, bridge.keepalive)}",
        "notifications true",
        # Up: every gate's events and status. Down: the feed and each gate's acks.
        f"topic {topics.all_events(reg.site)} out 1",
        f"topic {topics.all_status(reg.site)} out 1",
        f"topic {topics.feed(reg.site)} in 1",
        f"topic {topics.head(reg.site)} in 1",
        *(f"topic {topics.acks(reg.site, g.gate)} in 1" for g in reg.gates),
    ]
    if bridge.cafile is not None:
        lines += [f"bridge_cafile {bridge.cafile.resolve()}", "bridge_tls_version tlsv1.2", "bridge_insecure false"]
    return lines


def render_conf(sites: SiteRegistry | Sequence[SiteRegistry], role: Role, options: BrokerOptions, out_dir: Path) -> str:
    """mosquitto.conf for this role, pointing at passwd, acl and data/ inside `out_dir`."""
    regs = _as_list(sites)
    if options.port <= 0 or (options.tls is not None and options.tls.port <= 0):
        raise ValueError("pick the listener ports before writing the config")
    out_dir = out_dir.resolve()
    lines = [
        f"# Generated by starfish ({role} broker for {', '.join(r.site for r in regs)}): regenerate, do not edit.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {out_dir / 'passwd'}",
        f"acl_file {out_dir / 'acl'}",
        "persistence true",
        f"persistence_location {out_dir / 'data'}",  # 2.0 adds the "/" itself
        f"autosave_interval {options.autosave_interval}",
        f"max_queued_messages {options.max_queued_messages}",
        f"max_inflight_messages {options.max_inflight_messages}",
        *([f"max_packet_size {options.max_packet_size}"] if options.max_packet_size else []),
        "set_tcp_nodelay true",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    if options.run_as_user:
        lines.append(f"user {options.run_as_user}")
    lines += ["", f"listener {options.port} {options.host}".rstrip(), *_LISTENER_SETTINGS]
    if options.tls is not None:
        tls = options.tls
        lines += [
            "",
            f"listener {tls.port} {tls.host if tls.host is not None else options.host}".rstrip(),
            *_LISTENER_SETTINGS,
            f"cafile {tls.files.cafile.resolve()}",
            f"certfile {tls.files.certfile.resolve()}",
            f"keyfile {tls.files.keyfile.resolve()}",
            "tls_version tlsv1.2",
            "require_certificate false",
        ]
    if role == "site":
        if len(regs) != 1:
            raise ValueError("a site broker serves exactly one site")
        if regs[0].bridge is not None:
            lines += ["", *_bridge_section(regs[0], regs[0].bridge)]
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def write_broker_config(
    sites: SiteRegistry | Sequence[SiteRegistry],
    out_dir: Path,
    *,
    role: Role = "site",
    options: BrokerOptions | None = None,
) -> BrokerFiles:
    """Write mosquitto.conf, passwd and acl (mode 0600) into `out_dir`, and create data/ for persistence.

    Run as root, the files go to the broker's user (`run_as_user`, else "mosquitto"), who must
    also be able to traverse `out_dir`.
    """
    options = options or BrokerOptions()
    accounts = broker_accounts(sites, role)
    conf = render_conf(sites, role, options, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = BrokerFiles(out_dir / "mosquitto.conf", out_dir / "passwd", out_dir / "acl", out_dir / "data")
    files.data_dir.mkdir(exist_ok=True)
    _write_private(files.passwd, render_passwd(accounts, iterations=options.password_iterations))
    _write_private(files.acl, render_acl(accounts))
    _write_private(files.conf, conf)
    owner = _broker_user(options)
    if owner is not None:
        for path in (files.passwd, files.acl, files.conf, files.data_dir):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    return files


def _broker_user(options: BrokerOptions) -> pwd.struct_passwd | None:
    """Who the broker runs as when we are root: mosquitto reads passwd and acl after dropping to that user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(options.run_as_user or "mosquitto")
    except KeyError:
        return None
