"""A Mosquitto broker as a child process, from the config `sync.mosquitto` writes; for tests, the demo
and the benchmark (production runs mosquitto as a system service with `starfish sync broker-config`);
and `AnonymousBroker`, a plain one for tests of the sync protocol itself.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from harness.processes import ChildProcess, free_port
from sync.mosquitto import (
    MAX_PACKET_BYTES,
    BridgeTo,
    BrokerOptions,
    GateAccount,
    Role,
    SiteRegistry,
    TlsFiles,
    TlsListener,
    write_broker_config,
)

APT_PACKAGE = "mosquitto"
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
CLOUD_USER = "cloud"


class MosquittoError(RuntimeError):
    """The broker could not be configured, started or stopped."""


class MosquittoNotFound(MosquittoError):
    """No mosquitto binary on this machine."""


def find_mosquitto(binary: str | None = None, *, extra_dirs: Sequence[str] = _SBIN_DIRS) -> str:
    """Path of the mosquitto binary (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    if binary:
        if shutil.which(binary) is None:
            raise MosquittoNotFound(f"mosquitto binary {binary!r} not found")
        return binary
    search = os.pathsep.join([os.environ.get("PATH", ""), *extra_dirs])
    found = shutil.which("mosquitto", path=search)
    if found is None:
        raise MosquittoNotFound(
            f"mosquitto not found (looked on PATH and in {', '.join(extra_dirs) or 'nothing else'}): "
            f"install the Debian package: apt-get install --no-install-recommends {APT_PACKAGE}"
        )
    return found


def _wildcard_to_loopback(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)


def _wait_listening(child: ChildProcess, host: str, ports: Sequence[int], timeout: float) -> None:
    """Return once the started broker accepts TCP connections on every port; `MosquittoError` with the
    end of its log if it exits first, or (after killing it) if it does not listen within `timeout`."""
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        if not child.running:
            raise _exited(child)
        try:
            with socket.create_connection((host, pending[0]), timeout=0.5):
                pending.pop(0)
                continue
        except OSError:
            pass
        if time.monotonic() > deadline:
            child.kill()
            raise MosquittoError(f"mosquitto did not listen on {pending} within {timeout}s")
        time.sleep(0.02)
    if not child.running:  # what answered was someone else, on a port we lost
        raise _exited(child)


def _exited(child: ChildProcess) -> MosquittoError:
    return MosquittoError(f"mosquitto exited with {child.returncode} at start:\n{child.log_text()[-2000:]}")


class _Broker:
    """What both brokers share: one mosquitto child process, started from a config file."""

    _child: ChildProcess | None

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def _launch(self, binary: str, conf: Path, log: Path) -> ChildProcess:
        self._child = ChildProcess("mosquitto", [binary, "-c", str(conf)], log)
        self._child.launch()
        return self._child

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: mosquitto saves its persistence file and exits; SIGKILL if it hangs."""
        if self._child is not None:
            self._child.stop(timeout)

    def kill(self) -> None:
        """SIGKILL: a crash; whatever was not autosaved is lost."""
        if self._child is not None:
            self._child.kill()


@dataclass
class MosquittoProcess(_Broker):
    """One mosquitto broker as a child process; ports and persistence survive `restart()`.

    `port`/`tls_port` None: a free port is picked on first start. `workdir` None: a temp dir,
    removed on exit. Use as a context manager, or `start()` and `stop()`.
    """

    sites: SiteRegistry | Sequence[SiteRegistry]
    role: Role = "site"
    workdir: Path | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    tls: TlsFiles | None = None
    tls_port: int | None = None
    binary: str | None = None
    max_queued_messages: int = 100_000
    max_inflight_messages: int = 100
    max_packet_size: int | None = MAX_PACKET_BYTES
    startup_timeout: float = 10.0
    _child: ChildProcess | None = field(default=None, init=False, repr=False)
    _own_workdir: bool = field(default=False, init=False, repr=False)
    _ports_fixed: bool = field(default=False, init=False, repr=False)

    @property
    def connect_host(self) -> str:
        return _wildcard_to_loopback(self.host)

    @property
    def log_path(self) -> Path:
        return self._dir() / "mosquitto.log"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _dir(self) -> Path:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="starfish-mosquitto-"))
            self._own_workdir = True
        return self.workdir.resolve()  # the broker runs in the repository's folder: its paths are absolute

    def _options(self) -> BrokerOptions:
        assert self.port is not None
        tls = None
        if self.tls is not None:
            assert self.tls_port is not None
            tls = TlsListener(self.tls_port, self.tls)
        as_root = os.geteuid() == 0
        return BrokerOptions(
            host=self.host,
            port=self.port,
            tls=tls,
            max_queued_messages=self.max_queued_messages,
            max_inflight_messages=self.max_inflight_messages,
            max_packet_size=self.max_packet_size,
            # As root, mosquitto would switch to user "mosquitto", who cannot read a private temp dir.
            run_as_user=pwd.getpwuid(os.geteuid()).pw_name if as_root else None,
        )

    def _pick_ports(self) -> None:
        if self.port is None:
            self.port = free_port(self.connect_host)
        if self.tls is not None and self.tls_port is None:
            while (p := free_port(self.connect_host)) == self.port:
                pass
            self.tls_port = p

    def start(self) -> Self:
        """Write the config and start the broker; return once it accepts TCP connections."""
        if self.running:
            return self
        binary = find_mosquitto(self.binary)
        auto_ports = not self._ports_fixed and (self.port is None or (self.tls is not None and self.tls_port is None))
        for attempt in range(3 if auto_ports else 1):
            self._pick_ports()
            files = write_broker_config(self.sites, self._dir(), role=self.role, options=self._options())
            self._launch(binary, files.conf, self.log_path)
            try:
                self._wait_ready()
            except MosquittoError:
                log = self.log_text()
                if auto_ports and attempt < 2 and "Address already in use" in log:
                    self.port = self.tls_port = None
                    continue
                raise
            self._ports_fixed = True
            return self
        raise AssertionError("unreachable")

    def _wait_ready(self) -> None:
        assert self._child is not None and self.port is not None
        ports = [self.port] + ([self.tls_port] if self.tls_port is not None and self.tls is not None else [])
        _wait_listening(self._child, self.connect_host, ports, self.startup_timeout)

    def restart(self) -> Self:
        """Stop (saving persistence) and start again on the same ports with the same data."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the broker; remove the work dir if this object made it."""
        self.stop()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def reload(self, sites: SiteRegistry | Sequence[SiteRegistry] | None = None) -> None:
        """Rewrite passwd and acl (e.g. a gate was added) and SIGHUP: clients stay connected.

        Listeners and bridges are not reloaded by mosquitto; change those with `restart()`.
        """
        if sites is not None:
            self.sites = sites
        write_broker_config(self.sites, self._dir(), role=self.role, options=self._options())
        if self._child is not None:
            self._child.send(signal.SIGHUP)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(Exception):
            self.close()


class AnonymousBroker(_Broker):
    """A plain Mosquitto for tests of the sync protocol itself: anyone may connect, on a loopback port
    picked at construction, with its persistence in `directory`/data.

    `stop()` (SIGTERM: it saves its persistence) and `start()` again: the same port, the same sessions
    and retained messages. Production brokers are never anonymous: `MosquittoProcess` runs the ACL'd
    config `sync.mosquitto` writes.
    """

    host = "127.0.0.1"

    def __init__(self, directory: Path, *, binary: str | None = None, startup_timeout: float = 10.0) -> None:
        self.directory = directory.resolve()  # the broker runs in the repository's folder
        self.port = free_port(self.host)
        self.binary = binary
        self.startup_timeout = startup_timeout
        self._child: ChildProcess | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    def _write_config(self) -> Path:
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        # As root, mosquitto would switch to user "mosquitto", who cannot write a private temp dir.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name}\n" if os.geteuid() == 0 else ""
        conf = self.directory / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous true\n{user}"
            f"persistence true\npersistence_location {data}/\n"
        )
        return conf

    def start(self) -> Self:
        """Start the broker; return once it accepts TCP connections (`MosquittoError` with its log if not)."""
        if self.running:
            return self
        conf = self._write_config()
        child = self._launch(find_mosquitto(self.binary), conf, self.log_path)
        _wait_listening(child, self.host, [self.port], self.startup_timeout)
        return self

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Brokers:
    """Brokers started from registries, each in `root`/<name>; `close()` stops them all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[MosquittoProcess] = []

    def start(
        self,
        sites: SiteRegistry | Sequence[SiteRegistry],
        *,
        role: Role = "site",
        name: str | None = None,
        port: int | None = None,
        tls: TlsFiles | None = None,
        tls_port: int | None = None,
    ) -> MosquittoProcess:
        """Start one broker (its name defaults to <role>-<n>); it answers once it accepts connections."""
        name = name or f"{role}-{len(self.started)}"
        broker = MosquittoProcess(sites, role=role, workdir=self.root / name, port=port, tls=tls, tls_port=tls_port)
        self.started.append(broker)
        return broker.start()

    def close(self) -> None:
        for b in self.started:
            b.close()


class MosquittoFactory(Protocol):
    """`Brokers.start`, as the `mosquitto_factory` fixture hands it to a test."""

    def __call__(
        self,
        sites: SiteRegistry | Sequence[SiteRegistry],
        *,
        role: Role = ...,
        name: str | None = ...,
        port: int | None = ...,
        tls: TlsFiles | None = ...,
        tls_port: int | None = ...,
    ) -> MosquittoProcess: ...


def password_of(username: str) -> str:
    """The password `make_site` gives each account: tests log in without carrying secrets around."""
    return f"pw-{username}-s3cret"


def make_site(site: str, gates: Sequence[str] = ("g1", "g2"), *, bridge: BridgeTo | None = None) -> SiteRegistry:
    """A registry for `site`: gate `<g>` logs in as `<site>-<g>` (the cloud uses gate-<id>)."""
    accounts = [GateAccount(gate=g, username=f"{site}-{g}", password=password_of(f"{site}-{g}")) for g in gates]
    return SiteRegistry(site, accounts, CLOUD_USER, password_of(CLOUD_USER), bridge=bridge)
