"""Face templates reach a gate through a real Mosquitto and a real HTTP snapshot, and its status confirms deletions.

The fake cloud is the kit's (gate_sync_kit.py): a paho client publishing the feed and a tiny HTTP
server serving the snapshot. The gate's face matcher is stood in for by a listener that records
what it hears and whether the store had committed it by then.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from edge import store as edge_store
from edge.store import GateStore, GateStoreReader, SnapshotError
from edge.store import faces as store_faces
from harness.mosquitto import AnonymousBroker
from harness.processes import eventually
from harness.tickets import make_ticket
from models import ProductKind, Ticket, TicketStatus
from models.face import pack_encoding, seal, site_face_key, template_aad
from models.sync import FaceDelete, FaceUpsert, GateStatus, SnapshotFace, SnapshotStatus, TicketUpsert
from sync import topics
from sync.snapshot_client import fetch_snapshot, snapshot_url
from tests.sync.gate_sync_kit import (
    DEADLINE,
    PASSWORD,
    SITE,
    USER,
    Peer,
    SnapshotServer,
    SnapshotState,
    gate_sync,
    peer,
    running,
)

SITE_KEY = site_face_key(bytes(range(32)), SITE)
ENCODING = [i / 1000 - 0.064 for i in range(128)]
STATUS = topics.status(SITE, "g1")


def sealed(ticket_id: str, holder_id: str) -> str:
    return seal(SITE_KEY, pack_encoding(ENCODING), template_aad(SITE, ticket_id, holder_id))


def season(ticket_id: str) -> Ticket:
    return make_ticket(ProductKind.SEASON, ticket_id=ticket_id, code=f"SEASON-{ticket_id}")


def face(ticket_id: str, holder_id: str) -> SnapshotFace:
    return SnapshotFace(ticket_id=ticket_id, holder_id=holder_id, sealed=sealed(ticket_id, holder_id))


class Listener:
    """Records each call with what another connection to the store saw at that moment (only commits)."""

    def __init__(self, db: Path, *, fail: bool = False) -> None:
        self.reader = GateStoreReader(db)
        self.fail = fail
        self.heard: list[tuple[object, ...]] = []

    def _committed(self) -> list[str]:
        return [ticket_id for ticket_id, _, _ in self.reader.face_templates()]

    def face_put(self, ticket_id: str, holder_id: str, sealed: str) -> None:
        self.heard.append(("put", ticket_id, holder_id, sealed, self._committed(), self.reader.feed_seq()))
        if self.fail:
            raise RuntimeError("the matcher broke")

    def face_deleted(self, ticket_id: str) -> None:
        self.heard.append(("deleted", ticket_id, self._committed(), self.reader.feed_seq()))

    def faces_reloaded(self) -> None:
        self.heard.append(("reloaded", self._committed(), self.reader.feed_seq()))


def last_status(watcher: Peer) -> GateStatus | None:
    seen = watcher.on(STATUS)
    return GateStatus.model_validate_json(seen[-1].payload) if seen else None


async def status_when(watcher: Peer, ok: Callable[[GateStatus], bool], what: str) -> GateStatus:
    """The gate's retained status, once one says `ok`."""
    status = await eventually(lambda: (s := last_status(watcher)) is not None and ok(s) and s, what)
    assert isinstance(status, GateStatus)
    return status


def test_a_face_upsert_then_its_delete_reach_the_gate_in_order_and_its_status_confirms_the_deletion(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    store = GateStore(tmp_path / "gate.db")
    listener = Listener(tmp_path / "gate.db")
    text = sealed("5001", "h1")

    async def scenario() -> None:
        with peer(broker, STATUS) as watcher, peer(broker) as cloud:
            async with running(gate_sync(store, broker, snapshots, faces=listener)) as sync:
                cloud.feed(1, TicketUpsert(ticket=season("5001")))
                cloud.feed(2, FaceUpsert(ticket_id="5001", holder_id="h1", sealed=text))
                await eventually(lambda: sync.feed_seq == 2, "the template applied")
                assert list(store_faces.all_faces(store)) == [("5001", "h1", text)]
                cloud.feed(3, FaceDelete(ticket_id="5001"))  # the pass was refunded
                await eventually(lambda: sync.feed_seq == 3, "the deletion applied")
                # The cloud's confirmation: the gate's retained status at or past the FaceDelete's seq.
                confirmed = await status_when(watcher, lambda s: s.feed_seq >= 3, "a status at seq 3 or later")
                assert confirmed.state == "online" and confirmed.at is not None

    asyncio.run(scenario())
    assert list(store_faces.all_faces(store)) == []
    assert listener.heard == [
        ("reloaded", [], 0),  # the first snapshot: an empty site
        ("put", "5001", "h1", text, ["5001"], 2),  # each heard after its commit, with its feed position
        ("deleted", "5001", [], 3),
    ]
    store.close()


def test_a_snapshot_brings_the_sites_faces_and_the_gates_checksum_agrees_with_the_clouds(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    store = GateStore(tmp_path / "gate.db")
    store.conn.execute("INSERT INTO face_templates VALUES ('9', 'h9', 'a template the site no longer has')")
    store.conn.commit()
    listener = Listener(tmp_path / "gate.db")
    snapshots.state = SnapshotState(
        seq=7,
        tickets=[season("1"), season("2"), season("3")],
        statuses={"3": TicketStatus.BLOCKED},
        faces=[face("1", "h1"), face("2", "h2")],
    )

    async def scenario() -> None:
        with peer(broker, STATUS) as watcher, peer(broker) as cloud:
            async with running(gate_sync(store, broker, snapshots, faces=listener, checksum_interval_s=0.3)):
                status = await status_when(watcher, lambda s: s.checksum_seq == 7, "the snapshot's checksum")
                assert status.checksum == snapshots.state.checksum()
                cloud.feed(8, FaceDelete(ticket_id="1"))  # consent withdrawn
                status = await status_when(watcher, lambda s: s.checksum_seq == 8, "summed again after it")
                snapshots.state.faces = snapshots.state.faces[1:]  # the cloud's set after the deletion
                assert status.checksum == snapshots.state.checksum()

    asyncio.run(scenario())
    assert [ticket_id for ticket_id, _, _ in store_faces.all_faces(store)] == ["2"]
    assert listener.heard == [("reloaded", ["1", "2"], 7), ("deleted", "1", ["2"], 8)]
    store.close()


def test_a_listener_that_fails_neither_undoes_nor_holds_up_the_change(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    store = GateStore(tmp_path / "gate.db")
    listener = Listener(tmp_path / "gate.db", fail=True)

    async def scenario() -> None:
        with peer(broker) as cloud:
            async with running(gate_sync(store, broker, snapshots, faces=listener)) as sync:
                cloud.feed(1, FaceUpsert(ticket_id="5001", holder_id="h1", sealed=sealed("5001", "h1")))
                cloud.feed(2, FaceUpsert(ticket_id="5002", holder_id="h2", sealed=sealed("5002", "h2")))
                await eventually(lambda: sync.feed_seq == 2, "both applied")

    asyncio.run(scenario())
    assert [ticket_id for ticket_id, _, _ in store_faces.all_faces(store)] == ["5001", "5002"]
    assert [h[0] for h in listener.heard] == ["reloaded", "put", "put"]
    assert snapshots.served == [0], "no change failed: no snapshot was needed to mend one"
    store.close()


def test_a_gate_refuses_a_snapshot_whose_face_lines_do_not_add_up_and_takes_the_next_good_one(
    tmp_path: Path, broker: AnonymousBroker, snapshots: SnapshotServer
) -> None:
    store = GateStore(tmp_path / "gate.db")
    snapshots.state = SnapshotState(seq=3, tickets=[season("1")], faces=[face("1", "h1")], faces_announced=2)

    async def scenario() -> None:
        async with running(gate_sync(store, broker, snapshots), settled=False) as sync:
            await eventually(lambda: len(snapshots.served) >= 2, "the snapshot refused and asked again")
            assert store.ticket_count() == 0 and store_faces.count(store) == 0, "nothing installed"
            snapshots.state.faces_announced = None
            await eventually(lambda: sync.connected and not sync.resyncing, "the good snapshot installed")

    asyncio.run(scenario())
    assert [ticket_id for ticket_id, _, _ in store_faces.all_faces(store)] == ["1"]
    assert edge_store.feed_seq(store) == 3
    store.close()


FACES = [face("1", "h1"), face("2", "h2")]


@pytest.mark.parametrize(
    ("state", "refusal"),
    [
        pytest.param(
            SnapshotState(faces=FACES, faces_announced=3), "announced 3 face templates but held 2", id="fewer"
        ),
        pytest.param(SnapshotState(faces=FACES, faces_announced=1), "announced 1 face templates but held 2", id="more"),
        pytest.param(
            SnapshotState(extra_lines=[FACES[0].model_dump_json()]),
            "announced 0 face templates but held 1",
            id="a-face-the-header-does-not-announce",
        ),
        pytest.param(
            SnapshotState(
                faces=FACES[:1], faces_announced=2, extra_lines=['{"ticket_id":"2","holder_id":"h2","sealed":""}']
            ),
            r"snapshot line \d+: sealed",
            id="an-empty-template",
        ),
        pytest.param(
            SnapshotState(
                faces=FACES[:1],
                faces_announced=1,
                extra_lines=[SnapshotStatus(ticket_id="1", status=TicketStatus.REVOKED).model_dump_json()],
            ),
            r"snapshot line \d+: ",
            id="a-status-line-after-the-faces",
        ),
    ],
)
def test_a_snapshot_whose_face_lines_are_wrong_is_refused(
    tmp_path: Path, snapshots: SnapshotServer, state: SnapshotState, refusal: str
) -> None:
    snapshots.state = dataclasses.replace(state, tickets=[season("1"), season("2")])
    with pytest.raises(SnapshotError, match=refusal):
        fetch_snapshot(
            url=snapshot_url(snapshots.base, SITE),
            site=SITE,
            open_sink=lambda: edge_store.SnapshotStaging(tmp_path / "snap.db"),
            auth=(USER, PASSWORD),
            timeout_s=DEADLINE,
        )
