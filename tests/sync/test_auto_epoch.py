"""A cloud restored from an older backup starts a new feed epoch by itself.

The broker keeps each site's feed head retained: how far the gates were told the feed goes. A cloud whose
database is behind that head in the same epoch would hand out sequence numbers the gates already took
(and they would skip the new changes as repeats); taking the feed lease, it reads the retained heads
first and starts a new epoch for such a site, logged and audited, so every gate fetches a snapshot.
"""

from __future__ import annotations

import base64
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import select

from cloud.audit.models import AuditEntry
from cloud.db import make_engine, make_sessionmaker
from cloud.settings import Settings
from cloud.sync import feed
from cloud.sync.mqtt import CloudSync
from harness.cloud_api import seed_cloud
from harness.keys import KEYSET_ROOT_B64
from harness.mosquitto import CLOUD_USER, MosquittoFactory, MosquittoProcess, make_site, password_of
from harness.mqtt import BrokerClient, connect_client
from harness.processes import wait_until
from models.sync import FeedHead, GateRoster

SITE = "nanshan"


class Cloud:
    """The cloud's database and its sync loop, started and stopped as a restart would."""

    def __init__(self, db: Path, broker: MosquittoProcess) -> None:
        self.db = db
        self.settings = Settings(
            environment="test",
            database_url=f"sqlite:///{db}",
            jwt_secret=base64.b64encode(os.urandom(32)).decode(),
            signing_key_b64=base64.b64encode(os.urandom(32)).decode(),
            keyset_root_key_b64=KEYSET_ROOT_B64,
            mqtt_host=broker.connect_host,
            mqtt_port=broker.port,
            mqtt_username=CLOUD_USER,
            mqtt_password=password_of(CLOUD_USER),
            sync_heartbeat_seconds=0.2,
        )
        self.site_id = seed_cloud(self.settings, SITE, ["g1"], []).site_id
        self.engine = make_engine(self.settings.database_url)
        self.factory = make_sessionmaker(self.engine)
        self.sync: CloudSync | None = None

    def start(self) -> None:
        self.engine = make_engine(self.settings.database_url)
        self.factory = make_sessionmaker(self.engine)
        self.sync = CloudSync.from_settings(self.factory, self.settings).start()

    def stop(self) -> None:
        if self.sync is not None:
            self.sync.stop()
            self.sync = None
        self.engine.dispose()

    def change(self, n: int) -> int:
        """Append `n` changes to the site's feed, as sales would; its head seq after them."""
        with self.factory() as session:
            for i in range(n):
                feed.append_change(session, self.site_id, GateRoster(gates=["g1", f"x{i}"]))
            session.commit()
            return feed.head_seq(session, self.site_id)

    def head(self) -> tuple[int, str]:
        with self.factory() as session:
            return feed.head(session, self.site_id)

    def backup(self, to: Path) -> None:
        with closing(sqlite3.connect(self.db)) as src, closing(sqlite3.connect(to)) as dst:
            src.backup(dst)

    def restore(self, backup: Path) -> None:
        for suffix in ("-wal", "-shm"):
            Path(f"{self.db}{suffix}").unlink(missing_ok=True)
        self.db.write_bytes(backup.read_bytes())

    def audited(self) -> list[AuditEntry]:
        with self.factory() as session:
            return list(session.scalars(select(AuditEntry).where(AuditEntry.action == "feed.new_epoch")))


@pytest.fixture
def world(tmp_path: Path, mosquitto_factory: MosquittoFactory) -> Iterator[tuple[Cloud, BrokerClient]]:
    broker = mosquitto_factory(make_site(SITE, ["g1"]), role="site")
    cloud = Cloud(tmp_path / "cloud.db", broker)
    gate = connect_client(broker, f"{SITE}-g1", password_of(f"{SITE}-g1"))
    gate.subscribe(f"sf/{SITE}/head")
    yield cloud, gate
    gate.close()
    cloud.stop()


def _told(gate: BrokerClient, seq: int, epoch: str) -> FeedHead:
    """Wait until the gate was told a head at `seq` of `epoch`."""

    def told() -> FeedHead | None:
        heads = [FeedHead.model_validate_json(m.payload) for m in gate.received(f"sf/{SITE}/head")]
        return next((h for h in reversed(heads) if h.seq == seq and h.epoch == epoch), None)

    head = wait_until(told, f"a head at {seq} of epoch {epoch!r}", 20)
    assert head is not None
    return head


def test_a_cloud_restored_from_an_older_backup_starts_a_new_feed_epoch_by_itself(
    world: tuple[Cloud, BrokerClient], tmp_path: Path
) -> None:
    cloud, gate = world
    cloud.start()
    at_backup = cloud.change(3)
    seq, epoch = cloud.head()
    _told(gate, seq, epoch)
    cloud.backup(tmp_path / "last-night.db")
    _told(gate, cloud.change(5), epoch)  # the day's sales after the backup: the gates hold them
    cloud.stop()

    cloud.restore(tmp_path / "last-night.db")
    cloud.start()

    restarted = wait_until(lambda: next((h for h in [cloud.head()] if h[1] != epoch), None), "a new epoch", 20)
    assert restarted is not None
    seq, new_epoch = restarted
    assert seq == at_backup  # the restored feed goes on from its own head, in a new run
    _told(gate, seq, new_epoch)  # the gates learn the new run and fetch a snapshot
    [entry] = cloud.audited()
    assert entry.actor == "system"
    assert entry.detail == {"old_epoch": epoch, "seq": at_backup, "broker_seq": at_backup + 5, "epoch": new_epoch}


def test_a_cloud_restarted_on_its_own_database_keeps_its_feed_epoch(world: tuple[Cloud, BrokerClient]) -> None:
    cloud, gate = world
    cloud.start()
    epoch = cloud.head()[1]
    _told(gate, cloud.change(3), epoch)
    cloud.stop()

    cloud.start()
    _told(gate, cloud.change(1), epoch)  # published after the start-up check: the same run goes on
    assert cloud.head()[1] == epoch
    assert cloud.audited() == []
